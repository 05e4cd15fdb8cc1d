//! `switchyard`: the controller daemon; `switchyard demo` runs the local demo cluster (the
//! `switchyard-demo` binary beside this one).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard::controller::{self, Config};
use switchyard::pipeline::Encap;
use switchyard::source::Source;

/// mimalloc rather than glibc's malloc: the controller allocates many small, short-lived
/// objects from many threads (flows, keys, change sets), where glibc's arenas spent a third
/// of a cold start's instructions. The benchmarks use the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Controller(Box<ControllerArgs>),
    /// Set up this node's host network for Switchyard (what the node DaemonSet runs, in the
    /// host network namespace): the gateway's address, the route to the cluster CIDR, IPv4
    /// forwarding, SNAT of pod traffic leaving the cluster. Idempotent.
    NodeSetup(NodeSetupArgs),
    /// Build a local multi-node cluster on real OVS and show pods reaching each other
    /// (runs `switchyard-demo` from this binary's directory; `switchyard demo --help` lists
    /// its options).
    #[command(disable_help_flag = true)]
    Demo {
        /// Passed to `switchyard-demo` unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
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
    /// Where to listen for br-int OpenFlow connections: punix:PATH or ptcp:PORT[:IP].
    /// Plaintext: beyond loopback only with --insecure-listen.
    #[arg(long, default_value = "ptcp:6653:127.0.0.1")]
    openflow_listen: String,
    /// What each br-int connects to (this controller as the nodes reach it), e.g.
    /// tcp:10.0.0.5:6653; {node} and {internal_ip} are replaced.
    #[arg(long)]
    openflow_target: String,
    /// Where the CNI shim reaches the controller: unix:PATH or tcp:IP:PORT.
    /// Plaintext: beyond loopback only with --insecure-listen.
    #[arg(long, default_value = "tcp:127.0.0.1:6654")]
    cni_listen: String,
    /// Allow --openflow-listen and --cni-listen on plaintext TCP beyond loopback: any host
    /// that reaches them can connect as a node's br-int or attach and detach pods. Without
    /// TLS (not yet supported), firewall them to the nodes.
    #[arg(long)]
    insecure_listen: bool,
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
    /// Where the admin API (gRPC, what yardctl talks to) listens: a unix socket (PATH or
    /// unix:PATH), or tcp:IP:PORT — with mutual TLS (--admin-tls-*), or plaintext on a
    /// loopback address only.
    #[arg(long, default_value = switchyard::admin::DEFAULT_ADMIN_SOCKET)]
    admin_listen: String,
    /// PEM CA certificate that signed the admin API's client certificates (TCP only).
    #[arg(long, value_name = "FILE")]
    admin_tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) the admin API presents (TCP only).
    #[arg(long, value_name = "FILE")]
    admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "FILE")]
    admin_tls_key: Option<PathBuf>,
    /// Where /metrics (Prometheus), /healthz and /readyz are served over plain HTTP: IP:PORT.
    #[arg(long, default_value = switchyard::admin::metrics::DEFAULT_METRICS_LISTEN)]
    metrics_listen: String,
    /// Allow --metrics-listen on an address other hosts can reach (plain HTTP, no
    /// authentication: put it behind a firewall or a proxy).
    #[arg(long)]
    metrics_allow_remote: bool,
}

#[derive(Args)]
struct NodeSetupArgs {
    /// This node's pod CIDR (its Node's `spec.podCIDR`).
    #[arg(long)]
    pod_cidr: ipnet::Ipv4Net,
    /// The cluster's pod network, holding every node's pod CIDR.
    #[arg(long)]
    cluster_cidr: ipnet::Ipv4Net,
    /// The cluster's Service network (kube-apiserver's --service-cluster-ip-range), routed
    /// through the gateway too, so the node's own processes reach ClusterIPs.
    #[arg(long)]
    service_cidr: Option<ipnet::Ipv4Net>,
    /// MTU of the route to the cluster CIDR: the pods' MTU (underlay MTU − 50 for Geneve or
    /// VXLAN).
    #[arg(long, default_value_t = 1450)]
    mtu: u32,
    /// SNAT tool: auto (nft if installed, else iptables), nft or iptables.
    #[arg(long, default_value = "auto")]
    snat: switchyard::node_setup::SnatBackend,
    /// Seconds to wait for the controller to create the gateway port.
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// The NodePort range (kube-apiserver's --service-node-port-range), FIRST-LAST: new
    /// connections to this node's addresses on these ports go to the Service pipeline;
    /// `none`: no NodePorts on this node.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: PortRange,
    /// A CIDR the cluster's externalIPs and LoadBalancer ingress IPs come from, routed
    /// through the gateway (repeatable).
    #[arg(long = "external-cidr", value_name = "CIDR")]
    external_cidrs: Vec<ipnet::Ipv4Net>,
}

/// `--service-node-port-range`: `None` for `none`.
#[derive(Clone, Copy, Debug)]
struct PortRange(Option<(u16, u16)>);

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    if s == "none" {
        return Ok(PortRange(None));
    }
    let bad = || format!("{s:?} is not a port range FIRST-LAST (e.g. 30000-32767) or none");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok(PortRange(Some((lo, hi))))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => run_controller(*args),
        Command::NodeSetup(args) => run_node_setup(args),
        Command::Demo { args } => exec_demo(args),
    }
}

fn run_node_setup(args: NodeSetupArgs) -> ExitCode {
    use switchyard::node_setup::NodeSetup;
    let setup = NodeSetup::new(args.pod_cidr, args.cluster_cidr).map(|s| NodeSetup {
        service_cidr: args.service_cidr,
        mtu: args.mtu,
        snat: args.snat,
        wait: Duration::from_secs(args.wait),
        node_port_range: args.service_node_port_range.0,
        external_cidrs: args.external_cidrs,
        ..s
    });
    match setup.and_then(|s| s.apply()) {
        Ok(changes) if changes.is_empty() => {
            println!("node setup: nothing to change");
            ExitCode::SUCCESS
        }
        Ok(changes) => {
            for c in changes {
                println!("node setup: {c}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard node-setup: {e}");
            ExitCode::FAILURE
        }
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
    let admin = switchyard::admin::TlsFiles::from_flags(
        args.admin_tls_ca,
        args.admin_tls_cert,
        args.admin_tls_key,
        ["--admin-tls-ca", "--admin-tls-cert", "--admin-tls-key"],
    )
    .and_then(|tls| switchyard::admin::AdminConfig::new(&args.admin_listen, tls));
    let metrics = switchyard::admin::metrics::MetricsConfig::new(
        &args.metrics_listen,
        args.metrics_allow_remote,
    );
    let (admin, metrics) = match (admin, metrics) {
        (Ok(a), Ok(m)) => (a, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
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
        admin,
        metrics,
        insecure_listen: args.insecure_listen,
    };
    let result = runtime.block_on(async {
        switchyard::listen::check_listeners(&config)?;
        let source = match (args.cluster_file, args.kubeconfig) {
            (Some(file), _) => Source::cluster_file(file).await?,
            (None, kubeconfig) => {
                let client = switchyard::source::kube_client(kubeconfig.as_deref()).await?;
                Source::kubernetes(client).await?
            }
        };
        tokio::select! {
            r = controller::run(config, source) => r,
            signal = stop_signal() => {
                let signal = signal?;
                tracing::info!(%signal, "stopping: node agents stop, listeners close, sockets \
                    are removed (flows stay on the switches)");
                Ok(())
            }
        }
    });
    // Dropping `controller::run` above stopped the agents and closed the listeners.
    tracing::info!("stopped");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM (what kubelet and systemd send) or SIGINT (Ctrl-C); returns its name.
async fn stop_signal() -> Result<&'static str, switchyard::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| {
            switchyard::Error::Config(format!("cannot install the {name} handler: {e}"))
        })
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Replaces this process with `switchyard-demo ARGS...` from this binary's directory, so
/// signals, output and exit status are the demo's own. The demo lives in its own crate to
/// keep the controller library free of it; this keeps `switchyard demo` working.
fn exec_demo(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let dir = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(PathBuf::from).unwrap_or_default(),
        Err(e) => {
            eprintln!("switchyard demo: cannot find this binary's directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = dir.join("switchyard-demo");
    if !demo.is_file() {
        eprintln!(
            "switchyard demo: {} does not exist; the demo is its own binary, built by \
             `cargo build --bins` (package switchyard-demo) next to switchyard",
            demo.display()
        );
        return ExitCode::FAILURE;
    }
    let error = std::process::Command::new(&demo).args(args).exec();
    eprintln!("switchyard demo: cannot run {}: {error}", demo.display());
    ExitCode::FAILURE
}
