//! `switchyard-demo` (what `switchyard demo` runs): builds the local demo cluster, prints
//! who reaches whom, shows the controller putting faults right, and removes everything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::pipeline::Encap;
use switchyard_demo::{self as demo, DemoCluster, DemoOptions};

/// `switchyard demo`'s options (`switchyard demo ARGS` runs this binary with ARGS).
#[derive(Parser)]
#[command(
    name = "switchyard demo",
    bin_name = "switchyard demo",
    version,
    about = "Build a local multi-node cluster on real OVS and show pods reaching each other"
)]
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
    run_demo(DemoArgs::parse())
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
        controller_bin: sibling_binary("switchyard"),
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
    // Where to look while it runs (progress and pointers go to stderr).
    eprintln!(
        "\nadmin API: yardctl --server {} status   (also: pods, flows NODE, diff NODE, events -f)",
        cluster.admin_address()
    );
    eprintln!(
        "metrics: {}   (and /healthz, /readyz)",
        cluster.metrics_url()
    );
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
