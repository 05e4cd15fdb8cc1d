//! `switchyard`: the controller daemon; `switchyard demo` runs the local demo cluster (the
//! `switchyard-demo` binary beside this one).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::cli::{Cli, Command, ControllerArgs, NodeSetupArgs};
use switchyard::controller::{self, Config};
use switchyard::source::Source;

/// mimalloc rather than glibc's malloc: the controller allocates many small, short-lived
/// objects from many threads (flows, keys, change sets), where glibc's arenas spent a third
/// of a cold start's instructions. The benchmarks use the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // The certificate first: OVS and the CNI shim need it before anything else works.
    let certificate =
        args.request_certificate
            .then(|| switchyard::node_certificate::NodeCertificateConfig {
                node: args.node.clone().unwrap_or_default(),
                dir: args.certificates_dir.clone(),
                ca_namespace: args.ca_namespace.clone(),
                ca_name: args.ca_config_map.clone(),
                timeout: Duration::from_secs(args.certificate_timeout),
            });
    if let Some(config) = &certificate
        && !request_certificate(config, args.kubeconfig.as_deref())
    {
        return ExitCode::FAILURE;
    }
    let Some(cluster_cidr) = args.cluster_cidr else {
        // --request-certificate alone: the certificate was all there was to do.
        return ExitCode::SUCCESS;
    };
    let pod_cidr = match (args.pod_cidr, &args.node) {
        (Some(cidr), _) => cidr,
        (None, Some(node)) => match node_pod_cidr(node, args.kubeconfig.as_deref()) {
            Ok(cidr) => cidr,
            Err(e) => {
                eprintln!("switchyard node-setup: {e}");
                return ExitCode::FAILURE;
            }
        },
        // clap requires one of the two.
        (None, None) => return ExitCode::from(2),
    };
    let setup = match NodeSetup::new(pod_cidr, cluster_cidr).map(|s| NodeSetup {
        service_cidr: args.service_cidr,
        mtu: args.mtu,
        snat: args.snat,
        wait: Duration::from_secs(args.wait),
        node_port_range: args.service_node_port_range.0,
        external_cidrs: args.external_cidrs.clone(),
        ..s
    }) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("switchyard node-setup: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut first = true;
    loop {
        // Every later round renews the certificate when it nears its end.
        let certified = first
            || certificate
                .as_ref()
                .is_none_or(|config| request_certificate(config, args.kubeconfig.as_deref()));
        first = false;
        let result = setup.apply();
        match &result {
            Ok(changes) if changes.is_empty() => println!("node setup: nothing to change"),
            Ok(changes) => {
                for c in changes {
                    println!("node setup: {c}");
                }
            }
            Err(e) => eprintln!("switchyard node-setup: {e}"),
        }
        if args.reapply_every == 0 {
            return if result.is_ok() && certified {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        std::thread::sleep(Duration::from_secs(args.reapply_every));
    }
}

/// `--request-certificate`: the node's certificate in its directory; false (reported) on
/// failure.
fn request_certificate(
    config: &switchyard::node_certificate::NodeCertificateConfig,
    kubeconfig: Option<&std::path::Path>,
) -> bool {
    use switchyard::node_certificate::{self, Outcome};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard node-setup: cannot start the async runtime: {e}");
            return false;
        }
    };
    let result = runtime.block_on(async {
        let client = switchyard::source::kube_client(kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        node_certificate::ensure(client, config)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(Outcome::Unchanged) => true,
        Ok(Outcome::Issued(csr)) => {
            println!(
                "node setup: wrote a new certificate for node {} into {} (CertificateSigningRequest {csr})",
                config.node,
                config.dir.display()
            );
            true
        }
        Err(e) => {
            eprintln!("switchyard node-setup: {e}");
            false
        }
    }
}

/// `spec.podCIDR` of `node`, asked of the API server (one GET).
fn node_pod_cidr(
    node: &str,
    kubeconfig: Option<&std::path::Path>,
) -> Result<ipnet::Ipv4Net, switchyard::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| switchyard::Error::Config(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let client = switchyard::source::kube_client(kubeconfig).await?;
        Ok(switchyard::source::node_pod_cidr(client, node).await?)
    })
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
    let switch_tls = match (
        args.switch_tls_ca,
        args.switch_tls_cert,
        args.switch_tls_key,
    ) {
        (Some(ca), Some(certificate), Some(private_key)) => Some(switchyard_tls::TlsFiles {
            ca,
            certificate,
            private_key,
        }),
        (None, None, None) => None,
        _ => {
            eprintln!(
                "switchyard: --switch-tls-ca, --switch-tls-cert and --switch-tls-key go together"
            );
            return ExitCode::from(2);
        }
    };
    let cni_tls = match (args.cni_tls_ca, args.cni_tls_cert, args.cni_tls_key) {
        (Some(ca), Some(certificate), Some(private_key)) => Some(switchyard_tls::TlsFiles {
            ca,
            certificate,
            private_key,
        }),
        (None, None, None) => None,
        _ => {
            eprintln!("switchyard: --cni-tls-ca, --cni-tls-cert and --cni-tls-key go together");
            return ExitCode::from(2);
        }
    };
    let mut config = Config {
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
        switch_tls,
        cni_tls,
        cni_socket_uid: args.cni_socket_uid,
        audit: switchyard::audit::AuditConfig {
            all_policies: args.policy_audit,
            rate: args.policy_audit_rate,
            burst: args.policy_audit_burst,
            file: args.policy_audit_file,
        },
    };
    let result = runtime.block_on(async {
        let mut election = None;
        let mut signer = None;
        let mut own_renewal = None;
        let source = match (args.cluster_file, args.kubeconfig) {
            // The cluster file is the demo's: one controller, no election.
            (Some(file), _) => {
                if args.node_certificates {
                    tracing::warn!("--node-certificates needs the API-server source (it keeps \
                        its CA in a Secret and signs CertificateSigningRequests); ignored with \
                        --cluster-file");
                }
                switchyard::listen::check_listeners(&config)?;
                Source::cluster_file(file).await?
            }
            (None, kubeconfig) => {
                let client = switchyard::source::kube_client(kubeconfig.as_deref()).await?;
                if args.node_certificates {
                    let signer_config = switchyard::signer::SignerConfig {
                        namespace: args.lease_namespace.clone(),
                        ca_name: args.ca_secret.clone(),
                        policy: switchyard::signer::SignerPolicy {
                            requester: format!(
                                "system:serviceaccount:{}:{}",
                                args.lease_namespace, args.node_service_account
                            ),
                        },
                        validity: Duration::from_secs(args.node_certificate_days * 86400),
                        unknown_node_grace: Duration::from_secs(args.node_certificate_grace),
                    };
                    let ca = switchyard::signer::ensure_ca(client.clone(), &signer_config)
                        .await
                        .map_err(|e| switchyard::Error::Config(e.to_string()))?;
                    let ca = std::sync::Arc::new(ca);
                    let names = if args.certificate_names.is_empty() {
                        vec![format!("switchyard-controller.{}.svc", args.lease_namespace)]
                    } else {
                        args.certificate_names.clone()
                    };
                    let ips: Vec<std::net::IpAddr> = std::env::var("POD_IP")
                        .ok()
                        .and_then(|ip| ip.parse().ok())
                        .into_iter()
                        .collect();
                    let own = switchyard::signer::own_certificate(
                        &ca,
                        &names,
                        &ips,
                        Duration::from_secs(args.node_certificate_days * 86400),
                        &args.certificate_dir,
                    )
                    .map_err(|e| switchyard::Error::Config(e.to_string()))?;
                    tracing::info!(names = ?names, ips = ?ips, dir = %args.certificate_dir.display(),
                        "node certificates: issued this controller its own certificate");
                    // Renewed in its last third while the controller runs; the listeners
                    // present the new one from their next handshake.
                    own_renewal = Some(switchyard::signer::keep_own_certificate(
                        ca.clone(),
                        names.clone(),
                        ips.clone(),
                        Duration::from_secs(args.node_certificate_days * 86400),
                        args.certificate_dir.clone(),
                        Duration::from_secs(3600),
                    ));
                    // Explicit --*-tls-* flags win.
                    if config.switch_tls.is_none() {
                        config.switch_tls = Some(own.clone());
                    }
                    if config.cni_tls.is_none() && config.cni_listen.starts_with("ssl:") {
                        config.cni_tls = Some(own);
                    }
                    signer = Some((client.clone(), ca, signer_config));
                }
                switchyard::listen::check_listeners(&config)?;
                if args.leader_elect {
                    election = Some((
                        client.clone(),
                        switchyard::leader::LeaseConfig {
                            name: args.lease_name.clone(),
                            namespace: args.lease_namespace.clone(),
                            identity: switchyard::leader::default_identity(),
                            duration: Duration::from_secs(args.lease_duration),
                            cni_address: cni_advertise(args.cni_advertise.as_deref(), &config.cni_listen)?,
                        },
                    ));
                }
                Source::kubernetes(client).await?
            }
        };
        let state = source.subscribe();
        let (leadership_tx, leadership) = tokio::sync::watch::channel(match election {
            Some(_) => switchyard::leader::Leadership::default(),
            None => switchyard::leader::Leadership::sole(),
        });
        // The leader's CNI address while this replica is its standby (the CNI server hands
        // shims' connections on to it).
        let (leader_cni_tx, leader_cni) = tokio::sync::watch::channel(None);
        let elect = async {
            match &election {
                Some((client, lease)) => {
                    switchyard::leader::run(client.clone(), lease.clone(), leadership_tx, leader_cni_tx)
                        .await
                }
                None => std::future::pending().await,
            }
        };
        let signing = async {
            match signer {
                Some((client, ca, signer_config)) => {
                    switchyard::signer::run(client, ca, signer_config, leadership.clone(), state)
                        .await
                }
                None => std::future::pending().await,
            }
        };
        let renewing = async {
            match own_renewal {
                Some(renewal) => renewal.await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = controller::run_elected(config, source, leadership.clone(), leader_cni) => r,
            () = renewing => Err(switchyard::Error::TaskStopped("the controller's certificate renewal")),
            () = signing => Err(switchyard::Error::TaskStopped("the node certificate signer")),
            () = elect => Err(switchyard::Error::TaskStopped("the leader election")),
            signal = stop_signal() => {
                let signal = signal?;
                tracing::info!(%signal, "stopping: node agents stop, listeners close, sockets \
                    are removed (flows stay on the switches)");
                Ok(())
            }
        };
        // The agents are stopped (the controller future is dropped): give the Lease up so
        // the standby takes over at its next try.
        if let Some((client, lease)) = &election {
            match switchyard::leader::release(client.clone(), lease).await {
                Ok(true) => tracing::info!(identity = %lease.identity, "leader election: released the Lease"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: cannot release the Lease; \
                    the standby takes over once it expires"),
            }
        }
        result
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
/// Where a standby reaches this replica's CNI listener: `--cni-advertise`, else derived
/// from `--cni-listen` and POD_IP (cni_server::default_advertise).
fn cni_advertise(
    flag: Option<&str>,
    cni_listen: &str,
) -> Result<Option<String>, switchyard::Error> {
    match flag {
        Some("") => Ok(None),
        Some(target) => switchyard_target::Target::parse_connect(target)
            .map(|_| Some(target.to_owned()))
            .map_err(|e| {
                switchyard::Error::Config(format!("--cni-advertise {target:?}: {}", e.reason))
            }),
        None => {
            let pod_ip = std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok());
            Ok(switchyard::cni_server::default_advertise(
                cni_listen, pod_ip,
            ))
        }
    }
}

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
