//! `switchyard`: the controller daemon, and the local demo cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard::controller::{self, Config};
use switchyard::demo::{self, DemoCluster, DemoOptions};
use switchyard::pipeline::Encap;
use switchyard::source::Source;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes pod networking on Open vSwitch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: watch Kubernetes objects, program every node's OVS.
    Controller(ControllerArgs),
    /// Build a local multi-node cluster on real OVS and show pods reaching each other.
    Demo(DemoArgs),
}

#[derive(Args)]
struct ControllerArgs {
    /// Read Kubernetes objects from this multi-document YAML file (watched for edits)
    /// instead of the API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    cluster_file: Option<PathBuf>,
    /// Kubeconfig for the API server (default: in-cluster config, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// OVSDB target of each node; {node} and {internal_ip} are replaced.
    #[arg(long, default_value = "tcp:{internal_ip}:6640")]
    ovsdb_template: String,
    /// Where to listen for br-int OpenFlow connections.
    #[arg(long, default_value = "ptcp:6653")]
    openflow_listen: String,
    /// What each br-int connects to (this controller as the nodes reach it), e.g.
    /// tcp:10.0.0.5:6653; {node} and {internal_ip} are replaced.
    #[arg(long)]
    openflow_target: String,
    /// Where the CNI shim reaches the controller: unix:PATH or tcp:IP:PORT.
    #[arg(long, default_value = "tcp:0.0.0.0:6654")]
    cni_listen: String,
    /// Tunnel type: geneve or vxlan.
    #[arg(long, default_value = "geneve")]
    encap: Encap,
    /// MTU of the nodes' underlay network.
    #[arg(long, default_value_t = 1500)]
    underlay_mtu: u32,
    /// OVS datapath for br-int: netdev (userspace) or system (kernel module).
    #[arg(long, default_value = "netdev")]
    datapath: String,
    /// Seconds a CNI ADD waits for its pod and its flows.
    #[arg(long, default_value_t = 30)]
    cni_timeout: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Cluster file to use instead of the bundled one (Nodes, Namespaces, Pods).
    #[arg(long)]
    cluster_file: Option<PathBuf>,
    /// Tunnel type: geneve or vxlan.
    #[arg(long, default_value = "geneve")]
    encap: Encap,
    /// Exit non-zero unless every expected connection works.
    #[arg(long)]
    check: bool,
    /// Leave the cluster running until Ctrl-C, for exploration.
    #[arg(long)]
    keep: bool,
    /// The CNI plugin binary (default: switchyard-cni next to this binary).
    #[arg(long)]
    cni_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => run_controller(args),
        Command::Demo(args) => run_demo(args),
    }
}

fn run_controller(args: ControllerArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        // Colours only on a terminal: a log file (the demo's controller.log, journald) gets
        // plain `key=value` text that grep finds.
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        ovsdb_template: args.ovsdb_template,
        openflow_listen: args.openflow_listen,
        openflow_target: args.openflow_target,
        cni_listen: args.cni_listen,
        encap: args.encap,
        underlay_mtu: args.underlay_mtu,
        datapath_type: args.datapath,
        cni_timeout: Duration::from_secs(args.cni_timeout),
    };
    let result = runtime.block_on(async {
        let source = match (args.cluster_file, args.kubeconfig) {
            (Some(file), _) => Source::cluster_file(file).await?,
            (None, kubeconfig) => {
                let client = switchyard::source::kube_client(kubeconfig.as_deref()).await?;
                Source::kubernetes(client).await?
            }
        };
        tokio::select! {
            r = controller::run(config, source) => r,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping (flows stay on the switches)");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn run_demo(args: DemoArgs) -> ExitCode {
    let cluster_yaml = match &args.cluster_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("switchyard demo: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => demo::BUNDLED_CLUSTER.to_owned(),
    };
    let options = DemoOptions {
        cluster_yaml,
        encap: args.encap,
        controller_bin: std::env::current_exe().unwrap_or_else(|_| "switchyard".into()),
        cni_bin: args
            .cni_bin
            .unwrap_or_else(|| sibling_binary("switchyard-cni")),
    };
    // Ctrl-C must still clean up: the handler only sets a flag; the cluster's Drop removes
    // everything on the way out.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc_flag(flag);
    }
    println!("Building the demo cluster ({:?}) ...", args.encap);
    let cluster = match DemoCluster::start(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\nNodes:");
    for n in cluster.nodes.values() {
        println!(
            "  {:<10} pod CIDR {:<16} underlay {:<15} netns {}",
            n.model.name,
            n.model.pod_cidr.to_string(),
            n.model.internal_ip.to_string(),
            n.netns.name()
        );
    }
    println!("\nPods (created through switchyard-cni, as a container runtime would):");
    for p in cluster.pods.values() {
        println!(
            "  {:<20} on {:<8} {:<15} netns {}",
            p.key.to_string(),
            p.node,
            p.ip.to_string(),
            p.netns.name()
        );
    }
    println!("\nConnectivity (every pod to every pod, each node to its own pods):\n");
    let probes = cluster.check_connectivity();
    print!("{}", demo::render_matrix(&probes));
    println!(
        "\nWhile the cluster runs (--keep), look at the flows (named tables, cookies by owner):\n{}",
        cluster.how_to_look()
    );
    let mut all_ok = probes.iter().all(|p| p.as_expected());
    println!("\nThe controller puts things right (a flow added by hand, a crashed ovs-vswitchd):");
    let mut cluster = cluster;
    match cluster.exercise_faults() {
        Ok(lines) => {
            for l in lines {
                println!("  {l}");
            }
            let again = cluster.check_connectivity();
            let failed = again.iter().filter(|p| !p.as_expected()).count();
            println!(
                "  connectivity afterwards: {} of {} checks passed",
                again.len() - failed,
                again.len()
            );
            all_ok &= failed == 0;
        }
        Err(e) => {
            println!("  FAILED: {e}");
            all_ok = false;
        }
    }
    if args.keep {
        println!(
            "The cluster stays up until Ctrl-C. Controller log: {}",
            cluster.workdir().join("controller.log").display()
        );
        while !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("\nCleaning up ...");
    }
    drop(cluster);
    if args.check && !all_ok {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Sets `flag` on SIGINT/SIGTERM instead of dying, so Drop-based cleanup runs.
fn ctrlc_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    Ok(())
}
