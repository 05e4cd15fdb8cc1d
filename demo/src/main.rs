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
    /// Print one JSON object per probe on stdout (the probe contract, README "--json") and nothing else there;
    /// everything else goes to stderr.
    #[arg(long)]
    json: bool,
    /// How many times each client probes each Service target (each try a new connection).
    #[arg(long, default_value_t = 4)]
    tries: u32,
    /// The external client's route to CIDR (Service externalIPs, LoadBalancer IPs) goes via
    /// NODE's InternalIP (repeatable; default: via the first node).
    #[arg(long, value_name = "CIDR=NODE", value_parser = parse_external_route)]
    external_route: Vec<(ipnet::Ipv4Net, String)>,
}

fn parse_external_route(s: &str) -> Result<(ipnet::Ipv4Net, String), String> {
    let (cidr, node) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CIDR=NODE (e.g. 203.0.113.0/24=node-2)"))?;
    let net = cidr
        .parse::<ipnet::Ipv4Net>()
        .or_else(|_| cidr.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
        .map_err(|e| format!("{cidr:?} in {s:?} is not an IPv4 CIDR: {e}"))?;
    if node.is_empty() {
        return Err(format!("{s:?} names no node after '='"));
    }
    Ok((net, node.to_owned()))
}

/// Human output: stdout, or stderr under `--json` (stdout then carries the probes only).
macro_rules! say {
    ($json:expr) => { if $json { eprintln!() } else { println!() } };
    ($json:expr, $($t:tt)*) => { if $json { eprintln!($($t)*) } else { println!($($t)*) } };
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
    say!(
        args.json,
        "Building the demo cluster ({:?}) ...",
        args.encap
    );
    let mut cluster = match DemoCluster::start(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (cidr, node) in &args.external_route {
        if let Err(e) = cluster.add_external_route(*cidr, node) {
            eprintln!("switchyard demo: {e}");
            return ExitCode::FAILURE;
        }
    }
    if !demo::probe::sctp_supported() {
        eprintln!(
            "switchyard demo: this kernel has no SCTP sockets (EPROTONOSUPPORT): SCTP ports are neither served nor probed"
        );
    }
    // Where to look while it runs (progress and pointers go to stderr).
    eprintln!(
        "\nadmin API: yardctl --server {} status   (also: pods, flows NODE, diff NODE, events -f)",
        cluster.admin_address()
    );
    eprintln!(
        "metrics: {}   (and /healthz, /readyz)",
        cluster.metrics_url()
    );
    say!(args.json, "\nNodes:");
    for n in cluster.nodes.values() {
        say!(
            args.json,
            "  {:<10} pod CIDR {:<16} underlay {:<15} netns {}",
            n.model.name,
            n.model.pod_cidr.to_string(),
            n.model.internal_ip.to_string(),
            n.netns.name()
        );
    }
    say!(
        args.json,
        "\nPods (created through switchyard-cni, as a container runtime would):"
    );
    for p in cluster.pods.values() {
        say!(
            args.json,
            "  {:<20} on {:<8} {:<15} netns {}",
            p.key.to_string(),
            p.node,
            p.ip.to_string(),
            p.netns.name()
        );
    }
    say!(
        args.json,
        "\nConnectivity (every pod and node to every pod and node, and to the external client):\n"
    );
    let results = cluster.probe_all(args.tries);
    if args.json {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in &results {
            let _ = writeln!(out, "{}", r.json());
        }
        let _ = out.flush();
    }
    let probes = to_matrix(&cluster, &results);
    if args.json {
        eprint!("{}", demo::render_matrix(&probes));
    } else {
        print!("{}", demo::render_matrix(&probes));
    }
    say!(
        args.json,
        "\nWhile the cluster runs (--keep), look at the flows (named tables, cookies by owner):\n{}",
        cluster.how_to_look()
    );
    let mut all_ok = results.iter().all(|r| r.problem().is_none());
    say!(
        args.json,
        "\nThe controller puts things right (a flow added by hand, a crashed ovs-vswitchd):"
    );
    match cluster.exercise_faults() {
        Ok(lines) => {
            for l in lines {
                say!(args.json, "  {l}");
            }
            let again = cluster.check_connectivity();
            let failed = again.iter().filter(|p| !p.as_expected()).count();
            say!(
                args.json,
                "  connectivity afterwards: {} of {} checks passed",
                again.len() - failed,
                again.len()
            );
            for p in again.iter().filter(|p| !p.as_expected()) {
                say!(args.json, "    FAILED: {p:?}");
            }
            all_ok &= failed == 0;
        }
        Err(e) => {
            say!(args.json, "  FAILED: {e}");
            all_ok = false;
        }
    }
    if args.keep {
        say!(
            args.json,
            "The cluster stays up until Ctrl-C. Controller log: {}",
            cluster.workdir().join("controller.log").display()
        );
        while !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        say!(args.json, "\nCleaning up ...");
    }
    drop(cluster);
    if args.check && !all_ok {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The matrix table's view of the probes: Service tries folded into one per target.
fn to_matrix(cluster: &DemoCluster, results: &[demo::ProbeResult]) -> Vec<demo::Probe> {
    let _ = cluster;
    demo::legacy_probes(results.iter().filter(|r| r.record.try_ == 0))
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
