//! `switchyard demo`: a local multi-node cluster on real Open vSwitch, on this one machine.
//!
//! Owns: the stand-ins for what a real cluster has around Switchyard — machines (network
//! namespaces joined by an underlay switch), each node's OVS daemons and host network
//! setup (underlay bridge `br-phy`, the gateway's address), a container runtime that calls
//! the real `switchyard-cni` for every pod, and the connectivity checks. The controller
//! runs as its own process (`switchyard controller`), exactly as it would in a cluster.
//!
//! Does not own: anything on br-int. Bridges, ports and flows there are the controller's.
//!
//! Everything created is removed on every exit path: [`DemoCluster`]'s `Drop` deletes
//! pods through CNI DEL, stops the controller and the OVS daemons by PID, and deletes every
//! namespace. Ctrl-C is turned into an orderly return by the caller.
//!
//! Namespaces and OVS daemons come from `switchyard-testbed`, the harness the tests use
//! too; this crate adds what makes them a cluster. It lives outside the `switchyard`
//! library so the production controller carries none of it; `switchyard demo` runs the
//! `switchyard-demo` binary.

mod error;
pub mod probe;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::{Value, json};
use switchyard::policy::Protocol;
use switchyard::state::PolicyEnd;

use probe::{ProbeProtocol, Servers};

pub use error::Error;
use switchyard::model::{ClusterModel, NodeModel};
use switchyard::pipeline::{self, Encap};
use switchyard::source::{ObjectKey, parse_cluster_file};
use switchyard_testbed::{self as host, Netns, OvsSandbox};

/// The Service network the demo's nodes route through their gateway (Kubernetes' default
/// `--service-cluster-ip-range`; the bundled cluster's ClusterIPs lie in it).
pub const DEMO_SERVICE_CIDR: &str = "10.96.0.0/12";

/// The bundled demo cluster: three nodes, three namespaces, six pods, one Service.
pub const BUNDLED_CLUSTER: &str = include_str!("../../deploy/cluster.yaml");

/// How long the probes wait for every node to hold every Service (see `wait_for_services`).
const SERVICE_REALISE_TIMEOUT: Duration = Duration::from_secs(30);

/// The underlay network the demo gives its nodes (inside its own namespaces only).
const UNDERLAY_PREFIX: [u8; 3] = [192, 168, 77];
const UNDERLAY_MTU: u32 = 1500;
/// Commands the demo runs.
const REQUIRED_TOOLS: [&str; 7] = [
    "ip",
    "ovsdb-tool",
    "ovsdb-server",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ethtool",
    "ping",
];
/// A loopback TCP port nothing listens on now (the kernel's choice), for the controller's
/// metrics: several demo clusters run at once in the tests.
fn free_loopback_port() -> Result<std::net::SocketAddr, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Io {
            what: "pick a loopback port for the controller's metrics".into(),
            source: e,
        })
}

/// Name of the link to the controller's OpenFlow socket in each node's OVS run directory.
const CONTROLLER_LINK: &str = "switchyard-controller.sock";
/// The external namespace's address on the underlay: the nodes' default route (the way out
/// of the cluster, as a real network's router would be).
pub const UNDERLAY_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The external client's own address, outside the underlay and the cluster (TEST-NET-2:
/// reserved for documentation, never routed anywhere real).
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// How many probes run at once.
const PROBE_WORKERS: usize = 32;

/// How to build the demo cluster.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The cluster file's text (Nodes, Namespaces, Pods).
    pub cluster_yaml: String,
    /// Tunnel type.
    pub encap: Encap,
    /// The `switchyard` binary to run as the controller.
    pub controller_bin: PathBuf,
    /// The `switchyard-cni` binary the "container runtime" calls.
    pub cni_bin: PathBuf,
}

/// A simulated node.
pub struct DemoNode {
    /// The TCP server where a kubelet would listen (dropped first).
    pub servers: Option<Servers>,
    /// The node as the model sees it (with the demo's underlay address).
    pub model: NodeModel,
    /// OVS daemons (dropped before the namespace).
    pub ovs: OvsSandbox,
    /// The node's "machine".
    pub netns: Netns,
}

/// A pod the demo created through CNI ADD.
pub struct DemoPod {
    /// Namespace/name.
    pub key: ObjectKey,
    /// The node it runs on.
    pub node: String,
    /// The address CNI returned.
    pub ip: Ipv4Addr,
    /// The container id passed to CNI.
    pub container_id: String,
    /// The pod's network namespace.
    pub netns: Netns,
    servers: Option<Servers>,
}

/// The outside world: one namespace on the underlay holding the external client and its
/// server, and the router address the nodes' default route points at.
pub struct External {
    /// Its TCP server (dropped before the namespace).
    pub servers: Option<Servers>,
    /// The namespace.
    pub netns: Netns,
}

/// One check of the connectivity matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `pod default/client` or `node node-1`.
    pub from: String,
    /// `pod frontend/web-1`.
    pub to: String,
    /// `icmp` or `tcp`.
    pub protocol: &'static str,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Whether it should connect: what the cluster file's NetworkPolicies allow (computed
    /// from the same model the controller uses); true without policies.
    pub expected: bool,
}

impl Probe {
    /// It connected exactly when the policies allow it.
    pub fn as_expected(&self) -> bool {
        self.failure.is_none() == self.expected
    }
}

/// A running demo cluster.
pub struct DemoCluster {
    options: DemoOptions,
    run_id: String,
    workdir: PathBuf,
    cluster_file: PathBuf,
    documents: Vec<Value>,
    controller: Option<Child>,
    /// Where the controller serves /metrics (loopback, a port free when the cluster started;
    /// kept across controller restarts).
    metrics_listen: std::net::SocketAddr,
    /// Pods by key.
    pub pods: BTreeMap<ObjectKey, DemoPod>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, DemoNode>,
    /// The external client.
    pub external: Option<External>,
    underlay: Option<Netns>,
    cluster_cidr: Option<Ipv4Net>,
    external_routes: Vec<(Ipv4Net, String)>,
}

impl DemoCluster {
    /// Builds the cluster: underlay, nodes with OVS, the controller, then every pod of the
    /// cluster file through CNI ADD.
    pub fn start(options: DemoOptions) -> Result<DemoCluster, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Demo(
                "the demo creates network namespaces and runs Open vSwitch: run it as root".into(),
            ));
        }
        for tool in REQUIRED_TOOLS {
            if host::output("sh", &["-c", &format!("command -v {tool}")])
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                return Err(Error::Demo(format!(
                    "{tool} is not installed; scripts/install-deps.sh installs everything the demo needs"
                )));
            }
        }
        // Unique per cluster, not just per process: tests run several clusters at once.
        let run_id = format!("{:x}{:02x}", std::process::id() % 0xffff, unique() & 0xff);
        let workdir = std::env::temp_dir().join(format!("switchyard-demo-{run_id}-{}", unique()));
        std::fs::create_dir_all(&workdir).map_err(|e| Error::Io {
            what: format!("create {}", workdir.display()),
            source: e,
        })?;
        let documents = split_documents(&options.cluster_yaml)?;
        let mut cluster = DemoCluster {
            cluster_file: workdir.join("cluster.yaml"),
            options,
            run_id,
            workdir,
            documents,
            controller: None,
            metrics_listen: free_loopback_port()?,
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
            external: None,
            underlay: None,
            cluster_cidr: None,
            external_routes: Vec::new(),
        };
        cluster.assign_underlay_addresses();
        cluster.write_cluster_file()?;

        let underlay = Netns::create(&format!("sy{}-underlay", cluster.run_id))?;
        underlay.exec(&["ip", "link", "add", "ul-br", "type", "bridge"])?;
        underlay.exec(&["ip", "link", "set", "ul-br", "up"])?;
        cluster.underlay = Some(underlay);
        cluster.start_external()?;

        let (model, problems) = cluster.model();
        for p in &problems {
            eprintln!("cluster file: skipping {p}");
        }
        cluster.cluster_cidr = Some(cluster_cidr_for(model.nodes.values().map(|n| n.pod_cidr)));
        for node in model.nodes.values() {
            cluster.start_node(node.clone())?;
        }
        cluster.start_controller()?;
        let pods: Vec<_> = model.pods.values().cloned().collect();
        let started = model
            .nodes
            .keys()
            .try_for_each(|node| cluster.configure_gateway(node))
            .and_then(|()| {
                pods.iter()
                    .try_for_each(|pod| cluster.add_pod_network(&pod.key, &pod.node))
            });
        match started {
            Ok(()) => Ok(cluster),
            // The workdir goes with the cluster: show the controller's last words first.
            Err(e) => Err(Error::Demo(format!(
                "{e}\n--- controller log (last lines) ---\n{}",
                cluster.controller_log_tail(25)
            ))),
        }
    }

    /// The last `lines` lines of the controller's log.
    pub fn controller_log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.workdir.join("controller.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The model the controller sees (from the demo's copy of the cluster file).
    pub fn model(&self) -> (ClusterModel, Vec<switchyard::model::Problem>) {
        let text = render_documents(&self.documents);
        let (state, _) = parse_cluster_file(&text);
        ClusterModel::build(&state)
    }

    /// The prefix of every network namespace this cluster created (`sy<run id>-`).
    pub fn netns_prefix(&self) -> String {
        format!("sy{}-", self.run_id)
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// The cluster file the controller watches.
    pub fn cluster_file(&self) -> &Path {
        &self.cluster_file
    }

    /// The working directory: controller log, per-node OVS directories.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// `unix:` path of the controller's CNI socket.
    pub fn cni_target(&self) -> String {
        format!("unix:{}/cni.sock", self.workdir.display())
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        self.workdir.join("nodes").join(node)
    }

    /// Gives every Node object the demo's own underlay address, in name order.
    fn assign_underlay_addresses(&mut self) {
        let mut names: Vec<String> = self
            .documents
            .iter()
            .filter(|d| kind(d) == Some("Node"))
            .filter_map(|d| name(d).map(String::from))
            .collect();
        names.sort();
        for doc in self
            .documents
            .iter_mut()
            .filter(|d| kind(d) == Some("Node"))
        {
            let Some(index) = name(doc).and_then(|n| names.iter().position(|x| x == n)) else {
                continue;
            };
            set_internal_ip(doc, underlay_ip(index));
        }
    }

    /// The pods as the EndpointSlice controller sees them: those with an address.
    fn running_pods(&self) -> BTreeMap<ObjectKey, services::RunningPod> {
        self.pods
            .values()
            .filter_map(|p| {
                let doc = self.pod_doc(&p.key)?;
                Some((
                    p.key.clone(),
                    services::RunningPod::from_document(doc, p.ip),
                ))
            })
            .collect()
    }

    fn pod_doc(&self, key: &ObjectKey) -> Option<&Value> {
        self.documents.iter().find(|d| {
            kind(d) == Some("Pod")
                && name(d) == Some(key.name.as_str())
                && namespace(d).unwrap_or("default") == key.namespace
        })
    }

    /// The ports a pod serves: every containerPort it declares (TCP, UDP, SCTP), or TCP 80
    /// when it declares none.
    pub fn pod_ports(&self, key: &ObjectKey) -> Vec<(Protocol, u16)> {
        let mut ports: Vec<(Protocol, u16)> = self
            .pod_doc(key)
            .map(services::container_ports)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, proto, port)| (proto, port))
            .collect();
        ports.sort();
        ports.dedup();
        if ports.is_empty() {
            ports.push((Protocol::Tcp, probe::DEFAULT_POD_PORT));
        }
        ports
    }

    /// Stops the demo's servers in every pod (the nodes' and the external one keep
    /// running), for tests that serve in the pods with servers of their own.
    pub fn stop_pod_servers(&mut self) {
        for pod in self.pods.values_mut() {
            pod.servers.take();
        }
    }

    fn pod_servers(&self, key: &ObjectKey, netns: &Netns) -> Result<Servers, Error> {
        Servers::start(&netns.path(), &key.to_string(), &self.pod_ports(key))
    }

    /// The objects the controller reads: the cluster file's, with EndpointSlices completed
    /// from the running pods as a kube-controller-manager would (see [`services`]).
    pub fn controller_documents(&self) -> Vec<Value> {
        services::controller_documents(&self.documents, &self.running_pods())
    }

    fn has_services(&self) -> bool {
        self.documents
            .iter()
            .any(|d| matches!(kind(d), Some("Service" | "EndpointSlice")))
    }

    fn write_cluster_file(&self) -> Result<(), Error> {
        let tmp = self.cluster_file.with_extension("tmp");
        let text = render_documents(&self.controller_documents());
        std::fs::write(&tmp, text).map_err(|e| Error::Io {
            what: format!("write {}", tmp.display()),
            source: e,
        })?;
        // Rename, so the controller never reads a half-written file.
        std::fs::rename(&tmp, &self.cluster_file).map_err(|e| Error::Io {
            what: format!("rename to {}", self.cluster_file.display()),
            source: e,
        })
    }

    fn start_node(&mut self, model: NodeModel) -> Result<(), Error> {
        let index = self.nodes.len() + 1;
        let netns = Netns::create(&format!("sy{}-{}", self.run_id, model.name))?;
        let ovs = OvsSandbox::start(Some(&netns), &self.node_dir(&model.name))?;
        // ovs-vswitchd connects only to unix sockets inside its own run directory; a link
        // there to the controller's socket satisfies it.
        let link = self.node_dir(&model.name).join(CONTROLLER_LINK);
        std::os::unix::fs::symlink(self.workdir.join("ofp.sock"), &link).map_err(|e| {
            Error::Io {
                what: format!("link {} to the controller socket", link.display()),
                source: e,
            }
        })?;
        // The underlay: a veth from the node to the underlay switch. With the userspace
        // datapath the node's address must sit on an OVS bridge for tunnels to leave it.
        self.plug_into_underlay(&netns, &format!("ul{index}"))?;
        ovs.vsctl(&[
            "--may-exist",
            "add-br",
            "br-phy",
            "--",
            "set",
            "Bridge",
            "br-phy",
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            "br-phy",
            "eth0",
        ])?;
        configure_underlay(&netns, &model)?;
        let servers = Servers::start(
            &netns.path(),
            &format!("node:{}", model.name),
            &[(Protocol::Tcp, probe::KUBELET_PORT)],
        )?;
        self.nodes.insert(
            model.name.to_string(),
            DemoNode {
                servers: Some(servers),
                model,
                ovs,
                netns,
            },
        );
        Ok(())
    }

    /// Plugs `netns` into the underlay switch: a veth whose end `ul` is a port of `ul-br`
    /// and whose other end is `eth0` in `netns`, both up, checksum offload off (the
    /// userspace datapath needs it).
    fn plug_into_underlay(&self, netns: &Netns, ul: &str) -> Result<(), Error> {
        let underlay = self
            .underlay
            .as_ref()
            .ok_or_else(|| Error::Demo("underlay missing".into()))?;
        underlay.exec(&[
            "ip",
            "link",
            "add",
            ul,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        underlay.exec(&["ip", "link", "set", ul, "master", "ul-br", "up"])?;
        host::tx_offload_off(underlay, ul)?;
        netns.exec(&["ip", "link", "set", "eth0", "up"])?;
        host::tx_offload_off(netns, "eth0")?;
        Ok(())
    }

    /// The external namespace: on the underlay as its router ([`UNDERLAY_ROUTER`]), with the
    /// client's own address [`EXTERNAL_IP`] behind it, serving TCP [`probe::EXTERNAL_PORT`].
    fn start_external(&mut self) -> Result<(), Error> {
        let netns = Netns::create(&format!("sy{}-external", self.run_id))?;
        self.plug_into_underlay(&netns, "ulx")?;
        let router = format!("{UNDERLAY_ROUTER}/24");
        netns.exec(&["ip", "addr", "add", &router, "dev", "eth0"])?;
        netns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{EXTERNAL_IP}/32"),
            "dev",
            "lo",
        ])?;
        let servers = Servers::start(
            &netns.path(),
            "external",
            &[(Protocol::Tcp, probe::EXTERNAL_PORT)],
        )?;
        self.external = Some(External {
            servers: Some(servers),
            netns,
        });
        Ok(())
    }

    /// Routes the external client's traffic to `cidr` (a Service's externalIPs, its
    /// LoadBalancer ingress IPs) via `node`'s InternalIP, as an upstream router would.
    pub fn add_external_route(&mut self, cidr: Ipv4Net, node: &str) -> Result<(), Error> {
        let n = self.nodes.get(node).ok_or_else(|| {
            Error::Demo(format!("--external-route {cidr}={node}: no node {node}"))
        })?;
        let ext = self
            .external
            .as_ref()
            .ok_or_else(|| Error::Demo("no external namespace".into()))?;
        ext.netns.exec(&[
            "ip",
            "route",
            "replace",
            &cidr.to_string(),
            "via",
            &n.model.internal_ip.to_string(),
            "src",
            &EXTERNAL_IP.to_string(),
        ])?;
        self.external_routes.push((cidr, node.to_owned()));
        Ok(())
    }

    /// Every node pings every other node's InternalIP once, so each ovs-vswitchd has its
    /// peers' underlay MACs before the probes start: the userspace datapath drops a tunnel
    /// packet whose underlay neighbour it does not know yet (and learns it by snooping the
    /// ARP reply), which would cost a probe's first packet. Not a check: failures are
    /// ignored, the probes judge.
    fn warm_underlay(&self) {
        std::thread::scope(|scope| {
            for from in self.nodes.values() {
                for to in self
                    .nodes
                    .values()
                    .filter(|n| n.model.name != from.model.name)
                {
                    let ip = to.model.internal_ip.to_string();
                    scope.spawn(move || {
                        let _ = from
                            .netns
                            .exec_output(&["ping", "-n", "-q", "-c", "1", "-W", "1", &ip]);
                    });
                }
            }
        });
    }

    /// Routes every Service externalIP and LoadBalancer IP that no `--external-route`
    /// covers via the first node, as the probe contract says (idempotent).
    fn route_service_ips(&self) -> Result<(), Error> {
        let (Some(ext), Some(first)) = (&self.external, self.nodes.values().next()) else {
            return Ok(());
        };
        let nodes: BTreeMap<String, Ipv4Addr> = self
            .nodes
            .values()
            .map(|n| (n.model.name.to_string(), n.model.internal_ip))
            .collect();
        let ips: BTreeSet<Ipv4Addr> =
            services::service_targets(&self.controller_documents(), &nodes)
                .into_iter()
                .filter(|t| t.to.starts_with("externalip:") || t.to.starts_with("lbip:"))
                .map(|t| t.ip)
                .filter(|ip| !self.external_routes.iter().any(|(net, _)| net.contains(ip)))
                .collect();
        for ip in ips {
            ext.netns.exec(&[
                "ip",
                "route",
                "replace",
                &format!("{ip}/32"),
                "via",
                &first.model.internal_ip.to_string(),
                "src",
                &EXTERNAL_IP.to_string(),
            ])?;
        }
        // The nodes route those addresses into br-int (node setup's --external-cidr): run
        // it again where the set grew since a node was set up.
        if !self.external_cidrs().is_empty() {
            for name in self.nodes.keys() {
                let out = self.node_setup(name)?;
                if !out.status.success() {
                    return Err(Error::Demo(format!(
                        "node setup on {name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The cluster CIDR node setup routes through each gateway.
    pub fn cluster_cidr(&self) -> Option<Ipv4Net> {
        self.cluster_cidr
    }

    /// Kills a node's ovs-vswitchd with SIGKILL and starts it again the way a node's OVS
    /// service does: `other_config:flow-restore-wait=true` first (so the new vswitchd keeps
    /// the datapath quiet until the controller has restored its flows), then the daemon,
    /// then the host side of the bridges' internal ports, which the userspace datapath
    /// recreates (the underlay address on br-phy, the gateway's address).
    pub fn restart_vswitchd(&mut self, node: &str) -> Result<(), Error> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| Error::Demo(format!("no node {node}")))?;
        n.ovs.kill_vswitchd()?;
        n.ovs.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:flow-restore-wait=true",
        ])?;
        n.ovs.start_vswitchd()?;
        if !host::wait_until(Duration::from_secs(30), || {
            n.netns
                .exec_output(&["ip", "link", "show", "br-phy"])
                .is_ok_and(|o| o.status.success())
        }) {
            return Err(Error::Demo(format!(
                "node {node}: br-phy did not come back"
            )));
        }
        configure_underlay(&n.netns, &n.model)?;
        self.configure_gateway(node)
    }

    fn start_controller(&mut self) -> Result<(), Error> {
        let w = self.workdir.display().to_string();
        let log =
            std::fs::File::create(self.workdir.join("controller.log")).map_err(|e| Error::Io {
                what: "create controller.log".into(),
                source: e,
            })?;
        let err = log.try_clone().map_err(|e| Error::Io {
            what: "controller.log".into(),
            source: e,
        })?;
        let encap = match self.options.encap {
            Encap::Geneve => "geneve",
            Encap::Vxlan => "vxlan",
        };
        let child = Command::new(&self.options.controller_bin)
            .args([
                "controller",
                "--cluster-file",
                &self.cluster_file.display().to_string(),
                "--ovsdb-template",
                &format!("unix:{w}/nodes/{{node}}/db.sock"),
                "--openflow-listen",
                &format!("punix:{w}/ofp.sock"),
                "--openflow-target",
                &format!("unix:{w}/nodes/{{node}}/{CONTROLLER_LINK}"),
                "--cni-listen",
                &format!("unix:{w}/cni.sock"),
                "--encap",
                encap,
                "--underlay-mtu",
                &UNDERLAY_MTU.to_string(),
                "--admin-listen",
                &format!("unix:{w}/admin.sock"),
                "--metrics-listen",
                &self.metrics_listen.to_string(),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                Error::Demo(format!(
                    "cannot start the controller {}: {e}",
                    self.options.controller_bin.display()
                ))
            })?;
        self.controller = Some(child);
        let socket = self.workdir.join("cni.sock");
        if !host::wait_until(Duration::from_secs(30), || socket.exists()) {
            return Err(Error::Demo(format!(
                "the controller did not open {} within 30 s; see {}",
                socket.display(),
                self.workdir.join("controller.log").display()
            )));
        }
        Ok(())
    }

    /// The address of the controller's admin API, as `yardctl --server` takes it.
    pub fn admin_address(&self) -> String {
        format!("unix:{}", self.workdir.join("admin.sock").display())
    }

    /// The URL of the controller's Prometheus metrics (`/healthz` and `/readyz` beside it).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_listen)
    }

    /// Stops the controller process (by PID) and starts a new one on the same state.
    pub fn restart_controller(&mut self) -> Result<(), Error> {
        self.stop_controller();
        let _ = std::fs::remove_file(self.workdir.join("cni.sock"));
        self.start_controller()
    }

    fn stop_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            host::stop_pid(child.id() as i32);
            let _ = child.wait();
        }
    }
}

/// The node's underlay address on br-phy, link up, and its default route via the underlay's
/// router (the external namespace): what the machine's own network setup gives a real node.
fn configure_underlay(netns: &Netns, model: &NodeModel) -> Result<(), Error> {
    let cidr = format!("{}/24", model.internal_ip);
    netns.exec(&["ip", "addr", "replace", &cidr, "dev", "br-phy"])?;
    netns.exec(&["ip", "link", "set", "br-phy", "up"])?;
    // The node's own TCP and the TCP it forwards for pods leave through br-phy: with the
    // userspace datapath, checksums left to "hardware" arrive corrupt.
    host::tx_offload_off(netns, "br-phy")?;
    netns.exec(&[
        "ip",
        "route",
        "replace",
        "default",
        "via",
        &UNDERLAY_ROUTER.to_string(),
        "dev",
        "br-phy",
    ])?;
    Ok(())
}

/// The cluster CIDR the demo's node setup uses: the /16 around the first pod CIDR, widened
/// until it holds them all (the bundled cluster's is 10.244.0.0/16).
fn cluster_cidr_for(cidrs: impl Iterator<Item = Ipv4Net>) -> Ipv4Net {
    let cidrs: Vec<Ipv4Net> = cidrs.collect();
    let first = cidrs
        .first()
        .copied()
        .unwrap_or_else(|| Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).expect("valid"));
    let mut net = Ipv4Net::new(first.network(), first.prefix_len().min(16))
        .expect("prefix ≤ 16")
        .trunc();
    while !cidrs.iter().all(|c| net.contains(c)) && net.prefix_len() > 0 {
        net = net.supernet().unwrap_or(net);
    }
    net
}

impl DemoCluster {
    /// Runs the node setup a node's DaemonSet runs (`switchyard node-setup`, the same code,
    /// in the node's host network namespace) once the controller has created the gateway
    /// port: the gateway's address, the route to the cluster CIDR, forwarding, SNAT.
    fn configure_gateway(&self, node: &str) -> Result<(), Error> {
        let n = &self.nodes[node];
        let gw = pipeline::GATEWAY_PORT;
        if !host::wait_until(Duration::from_secs(30), || {
            n.netns
                .exec_output(&["ip", "link", "show", gw])
                .is_ok_and(|o| o.status.success())
        }) {
            return Err(Error::Demo(format!(
                "node {node}: the controller did not create {gw} within 30 s; see {}",
                self.workdir.join("controller.log").display()
            )));
        }
        let out = self.node_setup(node)?;
        if !out.status.success() {
            return Err(Error::Demo(format!(
                "node {node}: node setup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(host::tx_offload_off(&n.netns, gw)?)
    }

    /// Runs `switchyard node-setup` in `node`'s host network namespace, with the flags a
    /// DaemonSet would pass; returns its output whatever its status.
    pub fn node_setup(&self, node: &str) -> Result<std::process::Output, Error> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| Error::Demo(format!("no node {node} in the demo")))?;
        let cluster = self
            .cluster_cidr
            .unwrap_or_else(|| cluster_cidr_for(std::iter::once(n.model.pod_cidr)));
        let mtu = UNDERLAY_MTU - pipeline::encap_overhead(self.options.encap);
        let bin = self.options.controller_bin.display().to_string();
        let (pod_cidr, cluster, mtu) = (
            n.model.pod_cidr.to_string(),
            cluster.to_string(),
            mtu.to_string(),
        );
        let mut args: Vec<String> = vec![
            bin,
            "node-setup".into(),
            "--pod-cidr".into(),
            pod_cidr,
            "--cluster-cidr".into(),
            cluster,
            "--service-cidr".into(),
            DEMO_SERVICE_CIDR.into(),
            "--mtu".into(),
            mtu,
            "--wait".into(),
            "30".into(),
        ];
        for cidr in self.external_cidrs() {
            args.push("--external-cidr".into());
            args.push(cidr.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(n.netns.exec_output(&args)?)
    }

    /// What node setup routes through each gateway for externalIPs and LoadBalancer IPs:
    /// every `--external-route` CIDR and every such address of the cluster file (the pools a
    /// real cluster's operator would give).
    fn external_cidrs(&self) -> BTreeSet<Ipv4Net> {
        let nodes: BTreeMap<String, Ipv4Addr> = self
            .nodes
            .values()
            .map(|n| (n.model.name.to_string(), n.model.internal_ip))
            .collect();
        let mut out: BTreeSet<Ipv4Net> = self
            .external_routes
            .iter()
            .map(|(c, _)| c.trunc())
            .collect();
        out.extend(
            services::service_targets(&self.controller_documents(), &nodes)
                .into_iter()
                .filter(|t| t.to.starts_with("externalip:") || t.to.starts_with("lbip:"))
                .filter(|t| !out.iter().any(|c| c.contains(&t.ip)))
                .map(|t| Ipv4Net::from(t.ip))
                .collect::<Vec<_>>(),
        );
        out
    }

    fn cni_config(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "switchyard",
            "type": "switchyard-cni",
            "controller": self.cni_target(),
            "timeoutSeconds": 30,
        })
        .to_string()
    }

    /// Calls the CNI plugin inside the node's namespace, as a container runtime would.
    /// Returns the plugin's stdout (the CNI result or error JSON) and whether it succeeded.
    pub fn cni(
        &self,
        command: &str,
        node: &str,
        key: &ObjectKey,
        container_id: &str,
        netns: &Path,
    ) -> Result<(bool, String), Error> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| Error::Demo(format!("no node {node} in the demo")))?;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id}",
            key.namespace, key.name
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", n.netns.name()])
            .arg(&self.options.cni_bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_ARGS", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Demo(format!(
                    "cannot run the CNI plugin {}: {e}",
                    self.options.cni_bin.display()
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(self.cni_config().as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| Error::Io {
            what: "wait for the CNI plugin".into(),
            source: e,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() && stdout.trim().is_empty() {
            // No CNI error JSON at all: the plugin did not run or crashed.
            return Err(Error::Demo(format!(
                "CNI {command} for pod {key}: {} gave no result ({}): {}",
                self.options.cni_bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok((out.status.success(), stdout))
    }

    fn add_pod_network(&mut self, key: &ObjectKey, node: &str) -> Result<(), Error> {
        let netns = Netns::create(&format!("sy{}-{}-{}", self.run_id, key.namespace, key.name))?;
        let container_id = format!(
            "{:016x}{:08x}",
            unique(),
            switchyard::switch_config::datapath_id(&key.to_string()) as u32
        );
        let (ok, out) = self.cni("ADD", node, key, &container_id, &netns.path())?;
        if !ok {
            return Err(Error::Demo(format!(
                "CNI ADD for pod {key} on {node} failed: {}",
                out.trim()
            )));
        }
        let ip = cni_result_ip(&out).ok_or_else(|| {
            Error::Demo(format!(
                "CNI ADD for pod {key}: no IPv4 address in its result: {out}"
            ))
        })?;
        let servers = self.pod_servers(key, &netns)?;
        self.pods.insert(
            key.clone(),
            DemoPod {
                key: key.clone(),
                node: node.into(),
                ip,
                container_id,
                netns,
                servers: Some(servers),
            },
        );
        if self.has_services() {
            // The pod is running: its EndpointSlices list it now.
            self.write_cluster_file()?;
        }
        Ok(())
    }

    /// Adds a pod: to the cluster file first (as the API server would have it), then its
    /// network through CNI ADD.
    pub fn add_pod(&mut self, key: &ObjectKey, node: &str) -> Result<Ipv4Addr, Error> {
        self.documents.push(pod_document(key, node));
        self.write_cluster_file()?;
        self.add_pod_network(key, node)?;
        Ok(self.pods[key].ip)
    }

    /// Applies one object to the cluster file, as `kubectl apply` would: it replaces the
    /// object of the same kind, namespace and name, or is added. For objects that need no
    /// machinery (NetworkPolicies, Namespaces, a pod's labels).
    pub fn apply_document(&mut self, doc: Value) -> Result<(), Error> {
        let same = |d: &Value| {
            kind(d) == kind(&doc)
                && name(d) == name(&doc)
                && namespace(d).unwrap_or("default") == namespace(&doc).unwrap_or("default")
        };
        match self.documents.iter_mut().find(|d| same(d)) {
            Some(d) => *d = doc,
            None => self.documents.push(doc),
        }
        self.write_cluster_file()
    }

    /// Deletes one object from the cluster file (not a pod: see [`DemoCluster::delete_pod`]).
    pub fn delete_document(&mut self, kind_: &str, key: &ObjectKey) -> Result<(), Error> {
        self.documents.retain(|d| {
            !(kind(d) == Some(kind_)
                && name(d) == Some(key.name.as_str())
                && (key.namespace.is_empty() || namespace(d).unwrap_or("default") == key.namespace))
        });
        self.write_cluster_file()
    }

    /// Adds a pod given as a whole object (labels, container ports): to the cluster file,
    /// then its network through CNI ADD.
    pub fn add_pod_document(&mut self, doc: Value) -> Result<Ipv4Addr, Error> {
        let key = ObjectKey::new(
            namespace(&doc).unwrap_or("default"),
            name(&doc).unwrap_or_default(),
        );
        let node = doc["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.documents.push(doc);
        self.write_cluster_file()?;
        self.add_pod_network(&key, &node)?;
        Ok(self.pods[&key].ip)
    }

    /// Adds several pods at once: all objects first, then every CNI ADD in parallel, as a
    /// kubelet starting many pods would. Returns their addresses in the order given.
    pub fn add_pods_concurrently(
        &mut self,
        pods: &[(ObjectKey, String)],
    ) -> Result<Vec<Ipv4Addr>, Error> {
        for (key, node) in pods {
            self.documents.push(pod_document(key, node));
        }
        self.write_cluster_file()?;
        let mut prepared = Vec::new();
        for (key, node) in pods {
            let netns =
                Netns::create(&format!("sy{}-{}-{}", self.run_id, key.namespace, key.name))?;
            let container_id = format!(
                "{:016x}{:08x}",
                unique(),
                switchyard::switch_config::datapath_id(&key.to_string()) as u32
            );
            prepared.push((key.clone(), node.clone(), netns, container_id));
        }
        let results: Vec<Result<(bool, String), Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = prepared
                .iter()
                .map(|(key, node, netns, cid)| {
                    let this = &*self;
                    scope.spawn(move || this.cni("ADD", node, key, cid, &netns.path()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Demo("CNI thread panicked".into())))
                })
                .collect()
        });
        let mut ips = Vec::new();
        for ((key, node, netns, container_id), result) in prepared.into_iter().zip(results) {
            let (ok, out) = result?;
            if !ok {
                return Err(Error::Demo(format!(
                    "CNI ADD for pod {key} failed: {}",
                    out.trim()
                )));
            }
            let ip = cni_result_ip(&out).ok_or_else(|| {
                Error::Demo(format!("CNI ADD for pod {key}: no IPv4 address in {out}"))
            })?;
            let servers = self.pod_servers(&key, &netns)?;
            ips.push(ip);
            self.pods.insert(
                key.clone(),
                DemoPod {
                    key,
                    node,
                    ip,
                    container_id,
                    netns,
                    servers: Some(servers),
                },
            );
        }
        if self.has_services() {
            self.write_cluster_file()?;
        }
        Ok(ips)
    }

    /// `ovs-ofctl -O OpenFlow13 dump-flows --names` of a node's br-int, plus `args`.
    pub fn dump_flows(&self, node: &str, args: &[&str]) -> Result<String, Error> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| Error::Demo(format!("no node {node} in the demo")))?;
        let target = n.ovs.mgmt_target(pipeline::BRIDGE);
        let mut all = vec!["-O", "OpenFlow13", "dump-flows", "--names", target.as_str()];
        all.extend_from_slice(args);
        Ok(host::run("ovs-ofctl", &all)?)
    }

    /// Deletes a pod: CNI DEL first (as the kubelet does), then the object.
    pub fn delete_pod(&mut self, key: &ObjectKey) -> Result<(), Error> {
        if let Some(mut pod) = self.pods.remove(key) {
            pod.servers.take();
            let (ok, out) =
                self.cni("DEL", &pod.node, key, &pod.container_id, &pod.netns.path())?;
            if !ok {
                return Err(Error::Demo(format!(
                    "CNI DEL for pod {key} failed: {}",
                    out.trim()
                )));
            }
        }
        self.documents.retain(|d| {
            !(kind(d) == Some("Pod")
                && name(d) == Some(key.name.as_str())
                && namespace(d).unwrap_or("default") == key.namespace)
        });
        self.write_cluster_file()
    }

    /// Adds a node: its machine and OVS, then the Node object; waits for the controller to
    /// create its gateway.
    pub fn add_node(&mut self, name: &str, pod_cidr: &str) -> Result<(), Error> {
        let index = self.nodes.len();
        let ip = underlay_ip(index);
        let mut doc = node_document(name, pod_cidr);
        set_internal_ip(&mut doc, ip);
        let (state, _) = parse_cluster_file(&render_documents(std::slice::from_ref(&doc)));
        let (model, problems) = ClusterModel::build(&state);
        let node = model.nodes.get(name).cloned().ok_or_else(|| {
            Error::Demo(format!(
                "node {name} is not valid: {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        self.start_node(node)?;
        self.documents.push(doc);
        self.write_cluster_file()?;
        self.configure_gateway(name)
    }

    /// Runs the whole matrix (see [`DemoCluster::probe_all`]) once and returns it in the
    /// older shape the matrix table and the tests read: one [`Probe`] per probe, `from` as
    /// `pod NS/NAME`, `node NAME` or `external`, protocol in lower case.
    pub fn check_connectivity(&self) -> Vec<Probe> {
        legacy_probes(self.probe_all(1).iter())
    }

    /// Every probe of the probe contract (README, `--json`), run concurrently with short timeouts: every pod and
    /// every node to every other pod (ICMP and each declared port), to every node's
    /// InternalIP (ICMP, TCP 10250) and to the external client (TCP 80); every Service
    /// target `tries` times from the clients that may reach it. Each result carries what
    /// `--check` expects, computed from the objects (NetworkPolicies; a Service's usable
    /// endpoints).
    pub fn probe_all(&self, tries: u32) -> Vec<ProbeResult> {
        self.warm_underlay();
        if let Err(e) = self.route_service_ips() {
            eprintln!("switchyard demo: the external client's routes to Service IPs: {e}");
        }
        if let Err(missing) = self.wait_for_services() {
            eprintln!(
                "switchyard demo: Services not realised on every node after {}s (missing {missing}); probing anyway",
                SERVICE_REALISE_TIMEOUT.as_secs()
            );
        }
        let specs = self.probe_specs(tries.max(1));
        run_specs(specs)
    }

    /// Waits until every node's switch holds every Service the probes will try: the
    /// ServiceLb flow of each ClusterIP and, in the groups, each usable endpoint. The
    /// controller learns a changed cluster file asynchronously, so probing right after the
    /// last write would race it. Gives up after a deadline, saying what is missing per node
    /// (the probes then show what that breaks).
    pub fn wait_for_services(&self) -> Result<(), String> {
        let docs = self.controller_documents();
        let node_ips: BTreeMap<String, Ipv4Addr> = self
            .nodes
            .values()
            .map(|n| (n.model.name.to_string(), n.model.internal_ip))
            .collect();
        let targets = services::service_targets(&docs, &node_ips);
        // Each target's ServiceLb flow: its address (a NodePort's: the address node setup
        // redirects to) and port on one line.
        let cluster_ips: BTreeSet<String> = targets
            .iter()
            .map(|t| match t.node {
                Some(_) => format!("nw_dst={},tp_dst={}", pipeline::NODE_PORT_VIP, t.port),
                None => format!("nw_dst={},tp_dst={}", t.ip, t.port),
            })
            .collect();
        // An SCTP port has no group: the userspace datapath cannot balance it and refuses it.
        // An endpoint shows in its group's bucket as the DNAT's destination, or (session
        // affinity) as the address loaded into reg3.
        let endpoints: BTreeSet<Ipv4Addr> = targets
            .iter()
            .filter(|t| switchyard::state::userspace_datapath_balances(t.protocol))
            .flat_map(|t| services::usable_endpoints(&docs, t))
            .map(|e| e.ip)
            .collect();
        let in_groups = |groups: &str, ip: &Ipv4Addr| {
            groups.contains(&format!("nat(dst={ip}:"))
                || groups.contains(&format!("{:#x}->reg3", u32::from(*ip)))
        };
        if cluster_ips.is_empty() && endpoints.is_empty() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + SERVICE_REALISE_TIMEOUT;
        loop {
            let missing: Vec<String> = self
                .nodes
                .values()
                .filter_map(|n| {
                    let target = n.ovs.mgmt_target(pipeline::BRIDGE);
                    let dump = |what: &str| {
                        host::run("ovs-ofctl", &["-O", "OpenFlow13", what, target.as_str()])
                            .unwrap_or_default()
                    };
                    let (flows, groups) = (dump("dump-flows"), dump("dump-groups"));
                    let absent: Vec<String> = cluster_ips
                        .iter()
                        .filter(|m| !flows.contains(m.as_str()))
                        .cloned()
                        .chain(
                            endpoints
                                .iter()
                                .filter(|e| !in_groups(&groups, e))
                                .map(|e| format!("endpoint {e}")),
                        )
                        .collect();
                    (!absent.is_empty()).then(|| format!("{}: {}", n.model.name, absent.join(", ")))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(missing.join("; "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn probe_specs(&self, tries: u32) -> Vec<Spec> {
        let policies = self.policy_view();
        let sctp = probe::sctp_supported();
        let mut specs = Vec::new();
        let clients = self.clients();
        let l4s = |ports: &[(Protocol, u16)]| -> Vec<(Protocol, u16)> {
            ports
                .iter()
                .copied()
                .filter(|(p, _)| sctp || *p != Protocol::Sctp)
                .collect()
        };
        // Pods: from every other pod and every node.
        for dst in self.pods.values() {
            let ports = l4s(&self.pod_ports(&dst.key));
            for c in clients.iter().filter(|c| c.kind != ClientKind::External) {
                if c.label == dst.key.to_string() {
                    continue;
                }
                let allows = |l4| match (&c.kind, &c.pod) {
                    (ClientKind::Pod, Some(src)) => policies.policy_allows(src, &dst.key, l4),
                    // The node's own traffic to its pods is always allowed (kubelet probes).
                    (ClientKind::Node, _) if c.node == dst.node => true,
                    _ => policies.policy_allows_between(
                        PolicyEnd::Address(c.pod_network_source),
                        PolicyEnd::Pod(&dst.key),
                        l4,
                    ),
                };
                let expect = |l4: Option<(Protocol, u16)>, by: &str| {
                    if allows(l4) {
                        Expectation::Answer {
                            by: if by.is_empty() {
                                BTreeSet::new()
                            } else {
                                [by.to_owned()].into()
                            },
                            seen_source: (!by.is_empty()).then_some(c.pod_network_source),
                        }
                    } else {
                        Expectation::NoAnswer
                    }
                };
                let to = dst.key.to_string();
                specs.push(c.spec(&to, dst.ip, ProbeProtocol::Icmp, 0, 0, expect(None, "")));
                for &(proto, port) in &ports {
                    let e = expect(Some((proto, port)), &to);
                    specs.push(c.spec(&to, dst.ip, ProbeProtocol::L4(proto), port, 0, e));
                }
            }
        }
        // Nodes: from every pod and every other node.
        for n in self.nodes.values() {
            let to = format!("node:{}", n.model.name);
            let ip = n.model.internal_ip;
            for c in clients.iter().filter(|c| c.kind != ClientKind::External) {
                if c.label == to {
                    continue;
                }
                // A pod's traffic to another node leaves its node masqueraded; to its own
                // node it is delivered locally, unchanged.
                let seen = match c.kind {
                    ClientKind::Pod if c.node == *n.model.name => c.pod_network_source,
                    _ => c.node_ip,
                };
                let allowed = |l4| match &c.pod {
                    Some(src) => policies.policy_allows_between(
                        PolicyEnd::Pod(src),
                        PolicyEnd::Address(ip),
                        l4,
                    ),
                    None => true,
                };
                let expect = |l4, named: bool| {
                    if allowed(l4) {
                        Expectation::Answer {
                            by: if named {
                                [to.clone()].into()
                            } else {
                                BTreeSet::new()
                            },
                            seen_source: named.then_some(seen),
                        }
                    } else {
                        Expectation::NoAnswer
                    }
                };
                specs.push(c.spec(&to, ip, ProbeProtocol::Icmp, 0, 0, expect(None, false)));
                let kubelet = (Protocol::Tcp, probe::KUBELET_PORT);
                specs.push(c.spec(
                    &to,
                    ip,
                    ProbeProtocol::L4(Protocol::Tcp),
                    probe::KUBELET_PORT,
                    0,
                    expect(Some(kubelet), true),
                ));
            }
        }
        // The outside world: from every pod and node, SNATed to the node's address.
        if self.external.is_some() {
            for c in clients.iter().filter(|c| c.kind != ClientKind::External) {
                let l4 = Some((Protocol::Tcp, probe::EXTERNAL_PORT));
                let allowed = c.pod.as_ref().is_none_or(|src| {
                    policies.policy_allows_between(
                        PolicyEnd::Pod(src),
                        PolicyEnd::Address(EXTERNAL_IP),
                        l4,
                    )
                });
                let e = if allowed {
                    Expectation::Answer {
                        by: ["external".to_owned()].into(),
                        seen_source: Some(c.node_ip),
                    }
                } else {
                    Expectation::NoAnswer
                };
                specs.push(c.spec(
                    "external",
                    EXTERNAL_IP,
                    ProbeProtocol::L4(Protocol::Tcp),
                    probe::EXTERNAL_PORT,
                    0,
                    e,
                ));
            }
        }
        specs.extend(self.service_specs(&clients, &policies, tries, sctp));
        specs
    }

    fn service_specs(
        &self,
        clients: &[Client],
        policies: &switchyard::state::Snapshot,
        tries: u32,
        sctp: bool,
    ) -> Vec<Spec> {
        let docs = self.controller_documents();
        let nodes: BTreeMap<String, Ipv4Addr> = self
            .nodes
            .values()
            .map(|n| (n.model.name.to_string(), n.model.internal_ip))
            .collect();
        let mut specs = Vec::new();
        for t in services::service_targets(&docs, &nodes) {
            if t.protocol == Protocol::Sctp && !sctp {
                continue;
            }
            let endpoints = services::usable_endpoints(&docs, &t);
            let (etp_local, itp_local) = services::local_policies(&docs, &t.service);
            for c in clients {
                if c.kind == ClientKind::External && t.reach == services::Reach::Cluster {
                    continue;
                }
                // Where the connection enters the Service pipeline through a node's gateway
                // (a NodePort: the probed node, whoever asks; an externalIP or LB IP asked
                // from outside: the node the route goes via), and whether it is external
                // traffic there: eTP Local keeps that on the entry node's endpoints,
                // unSNATed. A node's own traffic (its pods are masqueraded to it) is not
                // external; another node's, and its pods', is.
                let entry = match (c.kind, t.node.as_ref()) {
                    (_, Some(node)) => Some(node.clone()),
                    (ClientKind::External, None) => Some(self.external_route_node(t.ip)),
                    _ => None,
                };
                let external = entry.as_ref().is_some_and(|n| *n != c.node);
                // Which endpoints this client may get (kube-proxy's topology.go): eTP Local
                // limits external traffic to the entry node's endpoints, iTP Local the
                // cluster's clients of the ClusterIP to their own node's.
                let local_node = match (c.kind, t.reach) {
                    _ if etp_local && external => entry.clone(),
                    (ClientKind::Pod | ClientKind::Node, services::Reach::Cluster) if itp_local => {
                        Some(c.node.clone())
                    }
                    _ => None,
                };
                let entry_gateway = entry
                    .as_ref()
                    .and_then(|n| self.nodes.get(n))
                    .map(|n| n.model.gateway_ip());
                // The source a client's packets keep up to an endpoint on the entry node:
                // the external client's own (its underlay address towards a node,
                // EXTERNAL_IP on its routes to Service IPs), a node's InternalIP, a pod's
                // node's InternalIP (the host's masquerade).
                let kept_source = match (c.kind, &t.node) {
                    (ClientKind::External, Some(_)) => UNDERLAY_ROUTER,
                    _ => c.node_ip,
                };
                let mut expected = service_expectation(&endpoints, local_node.as_deref(), |e| {
                    let Some(pod) = &e.pod else { return true };
                    let l4 = Some((t.protocol, e.port));
                    match (&c.kind, &c.pod, &entry, entry_gateway) {
                        // Through the entry node's gateway: its own pods see the client's
                        // address, which the policies judge unless it is the node's own (the
                        // node itself and its pods, masqueraded by the host: always
                        // allowed); the others see its gateway address (the SNAT).
                        (_, _, Some(n), _) if e.node.as_deref() == Some(n.as_str()) => {
                            *n == c.node
                                || policies.policy_allows_between(
                                    PolicyEnd::Address(kept_source),
                                    PolicyEnd::Pod(pod),
                                    l4,
                                )
                        }
                        (_, _, Some(_), Some(gw)) => policies.policy_allows_between(
                            PolicyEnd::Address(gw),
                            PolicyEnd::Pod(pod),
                            l4,
                        ),
                        (ClientKind::Pod, Some(src), _, _) => policies.policy_allows(src, pod, l4),
                        (ClientKind::Node, _, _, _) if e.node.as_deref() == Some(&c.node) => true,
                        _ => policies.policy_allows_between(
                            PolicyEnd::Address(c.pod_network_source),
                            PolicyEnd::Pod(pod),
                            l4,
                        ),
                    }
                });
                // An SCTP port is refused on the userspace datapath the demo runs
                // (docs/operations.md, "SCTP").
                if !switchyard::state::userspace_datapath_balances(t.protocol) {
                    expected = Expectation::Refused;
                }
                // eTP Local preserves the client's address (`kept_source`) to the endpoint.
                if etp_local
                    && external
                    && let Expectation::Answer { seen_source, .. } = &mut expected
                {
                    *seen_source = Some(kept_source);
                }
                for try_ in 0..tries {
                    specs.push(c.spec(
                        &t.to,
                        t.ip,
                        ProbeProtocol::L4(t.protocol),
                        t.port,
                        try_,
                        expected.clone(),
                    ));
                }
            }
        }
        specs
    }

    /// The node the external client's route to `ip` goes via (`--external-route`), else
    /// the first node.
    fn external_route_node(&self, ip: Ipv4Addr) -> String {
        self.external_routes
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, n)| n.clone())
            .or_else(|| self.nodes.keys().next().cloned())
            .unwrap_or_default()
    }

    fn clients(&self) -> Vec<Client> {
        let mut clients = Vec::new();
        for p in self.pods.values() {
            let Some(node) = self.nodes.get(&p.node) else {
                continue;
            };
            clients.push(Client {
                label: p.key.to_string(),
                kind: ClientKind::Pod,
                pod: Some(p.key.clone()),
                netns: p.netns.path(),
                netns_name: p.netns.name().to_owned(),
                node: p.node.clone(),
                node_ip: node.model.internal_ip,
                pod_network_source: p.ip,
            });
        }
        for n in self.nodes.values() {
            clients.push(Client {
                label: format!("node:{}", n.model.name),
                kind: ClientKind::Node,
                pod: None,
                netns: n.netns.path(),
                netns_name: n.netns.name().to_owned(),
                node: n.model.name.to_string(),
                node_ip: n.model.internal_ip,
                pod_network_source: n.model.gateway_ip(),
            });
        }
        if let Some(ext) = &self.external {
            clients.push(Client {
                label: "external".into(),
                kind: ClientKind::External,
                pod: None,
                netns: ext.netns.path(),
                netns_name: ext.netns.name().to_owned(),
                node: String::new(),
                node_ip: EXTERNAL_IP,
                pod_network_source: EXTERNAL_IP,
            });
        }
        clients
    }

    /// The cluster as the controller models it, with the demo's pods at the addresses CNI
    /// gave them: what the probes' expectations are computed from.
    fn policy_view(&self) -> switchyard::state::Snapshot {
        let (parsed, _) = parse_cluster_file(&render_documents(&self.documents));
        let mut state = switchyard::state::NetworkState::new();
        state.apply(switchyard::source::diff_states(
            &Default::default(),
            &parsed,
        ));
        for node in self.nodes.keys() {
            let ports = self
                .pods
                .values()
                .filter(|p| p.node == *node)
                .map(|p| switchyard::switch_config::PodPort {
                    iface: p.container_id.clone(),
                    pod: p.key.clone(),
                    ip: p.ip,
                    mac: switchyard::ipam::mac_for(p.ip),
                    container_id: p.container_id.clone(),
                })
                .collect();
            state.restore_attachments(node, ports);
        }
        state.snapshot()
    }

    /// `ovs-ofctl` commands an operator can paste to look at a node's flows.
    pub fn how_to_look(&self) -> String {
        let mut s = String::new();
        for node in self.nodes.values() {
            s.push_str(&format!(
                "  ip netns exec {} ovs-ofctl -O OpenFlow13 dump-flows --names {}\n",
                node.netns.name(),
                node.ovs.mgmt_target(pipeline::BRIDGE)
            ));
        }
        s
    }

    /// Shows the controller putting things right, on the first node: a drop flow added by
    /// hand above everything (removed as it happens), then ovs-vswitchd killed with SIGKILL
    /// and restarted with flow-restore-wait (the whole pipeline back on the new switch).
    /// Returns one line per step, or the first step that failed.
    pub fn exercise_faults(&mut self) -> Result<Vec<String>, Error> {
        let node = self
            .nodes
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| Error::Demo("no nodes".into()))?;
        let flows = |c: &DemoCluster| -> Result<Vec<String>, Error> {
            let mut v: Vec<String> = c
                .dump_flows(&node, &["--no-stats"])?
                .lines()
                .filter(|l| l.contains("table="))
                .map(|l| l.trim().to_owned())
                .collect();
            v.sort();
            Ok(v)
        };
        let before = flows(self)?;
        let mut lines = Vec::new();
        let target = self.nodes[&node].ovs.mgmt_target(pipeline::BRIDGE);
        let started = std::time::Instant::now();
        host::run(
            "ovs-ofctl",
            &[
                "-O",
                "OpenFlow13",
                "add-flow",
                &target,
                "table=0,priority=65000,actions=drop",
            ],
        )?;
        if !host::wait_until(Duration::from_secs(10), || {
            flows(self).is_ok_and(|f| f == before)
        }) {
            return Err(Error::Demo(format!(
                "node {node}: the drop flow added by hand was not removed within 10 s"
            )));
        }
        lines.push(format!(
            "{node}: `ovs-ofctl add-flow br-int priority=65000,actions=drop` undone in {} ms",
            started.elapsed().as_millis()
        ));
        let started = std::time::Instant::now();
        self.restart_vswitchd(&node)?;
        let restarted = started.elapsed();
        if !host::wait_until(Duration::from_secs(30), || {
            flows(self).is_ok_and(|f| f == before)
        }) {
            return Err(Error::Demo(format!(
                "node {node}: the pipeline did not come back within 30 s of restarting ovs-vswitchd; see {}",
                self.workdir.join("controller.log").display()
            )));
        }
        lines.push(format!(
            "{node}: ovs-vswitchd killed (SIGKILL) and restarted in {} ms; all {} flows back {} ms later",
            restarted.as_millis(),
            before.len(),
            (started.elapsed() - restarted).as_millis()
        ));
        Ok(lines)
    }

    fn shutdown(&mut self) {
        let pods: Vec<ObjectKey> = self.pods.keys().cloned().collect();
        for key in pods {
            if let Some(mut pod) = self.pods.remove(&key) {
                pod.servers.take();
                let _ = self.cni("DEL", &pod.node, &key, &pod.container_id, &pod.netns.path());
            }
        }
        self.stop_controller();
        self.nodes.clear();
        self.external.take();
        self.underlay.take();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        // For developers chasing a failure: leave everything in place to look at.
        if std::env::var_os("SWITCHYARD_DEMO_LEAVE").is_some() {
            eprintln!(
                "SWITCHYARD_DEMO_LEAVE is set: leaving namespaces sy{}-*, the controller and {} in place",
                self.run_id,
                self.workdir.display()
            );
            std::mem::forget(std::mem::take(&mut self.pods));
            std::mem::forget(std::mem::take(&mut self.nodes));
            std::mem::forget(self.external.take());
            std::mem::forget(self.underlay.take());
            std::mem::forget(self.controller.take());
            return;
        }
        self.shutdown();
    }
}

/// The probes in the shape the matrix table and older tests read: `from`/`to` as `pod
/// NS/NAME`, `node NAME` or `external`, protocol in lower case.
pub fn legacy_probes<'a>(results: impl Iterator<Item = &'a ProbeResult>) -> Vec<Probe> {
    results
        .map(|r| {
            let legacy = |s: &str| match s.strip_prefix("node:") {
                Some(n) => format!("node {n}"),
                None if s == "external" || s.contains(':') => s.to_owned(),
                None => format!("pod {s}"),
            };
            let protocol = match r.record.protocol {
                "ICMP" => "icmp",
                "UDP" => "udp",
                "SCTP" => "sctp",
                _ => "tcp",
            };
            Probe {
                from: legacy(&r.record.from),
                to: legacy(&r.record.to),
                protocol,
                // The older shape: `failure` is None exactly when it connected (to
                // the right server, with the right source, where an answer is due).
                failure: match &r.expected {
                    Expectation::Answer { .. } => r.problem(),
                    _ if r.record.connected => None,
                    _ => Some(r.record.error.unwrap_or("other").to_owned()),
                },
                expected: !matches!(r.expected, Expectation::NoAnswer | Expectation::Refused),
            }
        })
        .collect()
}

/// What a client of a Service port should see (kube-proxy's semantics): no usable endpoint
/// at all → refused; endpoints, but none on `local_node` when a Local traffic policy limits
/// the client to them, or none the NetworkPolicies let this client reach → no answer;
/// otherwise an answer from one of the allowed endpoints' pods (only some allowed: either).
pub fn service_expectation(
    endpoints: &BTreeSet<services::Endpoint>,
    local_node: Option<&str>,
    allows: impl Fn(&services::Endpoint) -> bool,
) -> Expectation {
    if endpoints.is_empty() {
        return Expectation::Refused;
    }
    let candidates: Vec<&services::Endpoint> = endpoints
        .iter()
        .filter(|e| local_node.is_none() || e.node.as_deref() == local_node)
        .collect();
    let allowed: Vec<&&services::Endpoint> = candidates.iter().filter(|e| allows(e)).collect();
    let by: BTreeSet<String> = allowed
        .iter()
        .filter_map(|e| e.pod.as_ref().map(|p| p.to_string()))
        .collect();
    if allowed.is_empty() {
        Expectation::NoAnswer
    } else if allowed.len() == candidates.len() {
        Expectation::Answer {
            by,
            seen_source: None,
        }
    } else {
        Expectation::Partial { by }
    }
}

/// What `--check` expects of one probe, computed from the objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Connects, answered by one of `by` (any answer when empty: ICMP carries no name), and,
    /// when given, the server saw that source address.
    Answer {
        /// Who may answer.
        by: BTreeSet<String>,
        /// The source the server must see.
        seen_source: Option<Ipv4Addr>,
    },
    /// Either no answer or one of `by` (a Service whose endpoints the policies allow only
    /// in part: which one a try reaches is the load balancer's choice).
    Partial {
        /// Who may answer.
        by: BTreeSet<String>,
    },
    /// Does not connect, whatever the error (NetworkPolicies deny it; no local endpoint).
    NoAnswer,
    /// Refused (TCP RST / ICMP port unreachable): a Service without any usable endpoint.
    Refused,
}

/// One line of `switchyard demo --json`, exactly the fields of the probe contract (README).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProbeRecord {
    /// `ns/name`, `node:NAME` or `external`.
    pub from: String,
    /// `ns/name`, `service:ns/name`, `nodeport:NODE:ns/name`, `externalip:IP:ns/name`,
    /// `lbip:IP:ns/name`, `node:NAME` or `external`.
    pub to: String,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// `ICMP`, `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    /// Which try (Services are tried `--tries` times).
    #[serde(rename = "try")]
    pub try_: u32,
    /// An answer came back.
    pub connected: bool,
    /// The name inside the answer.
    pub answered_by: Option<String>,
    /// The client socket's own address.
    pub from_ip: Option<Ipv4Addr>,
    /// The peer address the answering server saw.
    pub seen_source: Option<Ipv4Addr>,
    /// `refused`, `timeout`, `unreachable`, `reset` or `other` when not connected.
    pub error: Option<&'static str>,
}

/// A probe's line and what `--check` expects of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// What happened.
    pub record: ProbeRecord,
    /// What should have.
    pub expected: Expectation,
}

impl ProbeResult {
    /// What is wrong with it, if anything (None: as expected).
    pub fn problem(&self) -> Option<String> {
        let r = &self.record;
        let err = || r.error.unwrap_or("other").to_owned();
        let by_ok = |by: &BTreeSet<String>| {
            by.is_empty() || r.answered_by.as_ref().is_some_and(|a| by.contains(a))
        };
        match &self.expected {
            Expectation::Answer { by, seen_source } => {
                if !r.connected {
                    return Some(err());
                }
                if !by_ok(by) {
                    return Some(format!(
                        "answered by {}, expected {}",
                        r.answered_by.as_deref().unwrap_or("nobody"),
                        by.iter().cloned().collect::<Vec<_>>().join(" or ")
                    ));
                }
                match (seen_source, r.seen_source) {
                    (Some(want), Some(got)) if want != &got => {
                        Some(format!("the server saw source {got}, expected {want}"))
                    }
                    (Some(want), None) => {
                        Some(format!("the server reported no source, expected {want}"))
                    }
                    _ => None,
                }
            }
            Expectation::Partial { by } => (r.connected && !by_ok(by)).then(|| {
                format!(
                    "answered by {}, which the NetworkPolicies deny",
                    r.answered_by.as_deref().unwrap_or("nobody")
                )
            }),
            Expectation::NoAnswer => r
                .connected
                .then(|| "connected, but it should not (NetworkPolicies, traffic policy)".into()),
            Expectation::Refused => match (r.connected, r.error) {
                (true, _) => Some("connected, but the Service has no usable endpoint".into()),
                (false, Some("refused")) => None,
                (false, e) => Some(format!(
                    "{}, expected refused (no usable endpoint)",
                    e.unwrap_or("other")
                )),
            },
        }
    }

    /// The contract's JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.record).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientKind {
    Pod,
    Node,
    External,
}

/// Who asks: a pod, a node's host network or the external client.
struct Client {
    label: String,
    kind: ClientKind,
    pod: Option<ObjectKey>,
    netns: PathBuf,
    netns_name: String,
    /// The node it runs on (empty for the external client).
    node: String,
    /// Its node's InternalIP (the external client's own address).
    node_ip: Ipv4Addr,
    /// The source its traffic into the pod network carries: a pod's own address, a node's
    /// gateway address (its route to the cluster CIDR), the external client's address.
    pod_network_source: Ipv4Addr,
}

impl Client {
    fn spec(
        &self,
        to: &str,
        dst: Ipv4Addr,
        protocol: ProbeProtocol,
        port: u16,
        try_: u32,
        expected: Expectation,
    ) -> Spec {
        Spec {
            from: self.label.clone(),
            netns: self.netns.clone(),
            netns_name: self.netns_name.clone(),
            to: to.to_owned(),
            dst,
            protocol,
            port,
            try_,
            expected,
        }
    }
}

/// One probe to run.
struct Spec {
    from: String,
    netns: PathBuf,
    netns_name: String,
    to: String,
    dst: Ipv4Addr,
    protocol: ProbeProtocol,
    port: u16,
    try_: u32,
    expected: Expectation,
}

/// Runs the probes on [`PROBE_WORKERS`] threads (each enters the client's namespace for
/// each probe); results in the order given.
fn run_specs(specs: Vec<Spec>) -> Vec<ProbeResult> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProbeResult>>> = Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..PROBE_WORKERS.min(specs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(s) = specs.get(i) else { break };
                    let o = probe::try_once(&s.netns, &s.netns_name, s.dst, s.protocol, s.port);
                    let r = ProbeResult {
                        record: ProbeRecord {
                            from: s.from.clone(),
                            to: s.to.clone(),
                            port: s.port,
                            protocol: s.protocol.name(),
                            try_: s.try_,
                            connected: o.connected,
                            answered_by: o.answered_by,
                            from_ip: o.from_ip,
                            seen_source: o.seen_source,
                            error: if o.connected {
                                None
                            } else {
                                o.error.or(Some("other"))
                            },
                        },
                        expected: s.expected.clone(),
                    };
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Renders the matrix as a table: one row per source, one column per destination, each cell
/// `icmp/tcp` as ✓ or ✗.
pub fn render_matrix(probes: &[Probe]) -> String {
    let mut sources: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for p in probes {
        if !sources.contains(&p.from.as_str()) {
            sources.push(&p.from);
        }
        if !targets.contains(&p.to.as_str()) {
            targets.push(&p.to);
        }
    }
    // A cell: ICMP, then every port probed between the two (✓ only if all connected).
    let cell = |from: &str, to: &str| -> String {
        let pair: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.from == from && p.to == to)
            .collect();
        let mark = |icmp: bool| {
            let v: Vec<&&Probe> = pair
                .iter()
                .filter(|p| (p.protocol == "icmp") == icmp)
                .collect();
            match v.is_empty() {
                true => "-",
                false if v.iter().all(|p| p.failure.is_none()) => "✓",
                false => "✗",
            }
        };
        if pair.is_empty() {
            "-".into()
        } else {
            format!("{}/{}", mark(true), mark(false))
        }
    };
    targets.sort_unstable();
    let width = sources.iter().map(|s| s.len()).max().unwrap_or(4) + 2;
    let short = |t: &str| t.trim_start_matches("pod ").to_owned();
    let col = targets
        .iter()
        .map(|t| short(t).len())
        .max()
        .unwrap_or(3)
        .max(5)
        + 2;
    let mut out = format!("{:width$}", "from \\ to   (icmp/ports)");
    for t in &targets {
        out.push_str(&format!("{:>col$}", short(t)));
    }
    out.push('\n');
    for s in &sources {
        out.push_str(&format!("{s:width$}"));
        for t in &targets {
            out.push_str(&format!("{:>col$}", cell(s, t)));
        }
        out.push('\n');
    }
    let failures: Vec<&Probe> = probes.iter().filter(|p| !p.as_expected()).collect();
    let denied = probes.iter().filter(|p| !p.expected).count();
    out.push_str(&format!(
        "\n{} of {} checks passed",
        probes.len() - failures.len(),
        probes.len()
    ));
    if denied > 0 {
        out.push_str(&format!(
            " ({denied} expected to fail: the NetworkPolicies deny them)"
        ));
    }
    out.push('\n');
    for f in failures {
        if f.expected {
            out.push_str(&format!(
                "  FAILED {} {} -> {}: {}\n",
                f.protocol,
                f.from,
                f.to,
                f.failure.as_deref().unwrap_or("")
            ));
        } else {
            out.push_str(&format!(
                "  FAILED {} {} -> {}: connected, but the NetworkPolicies deny it\n",
                f.protocol, f.from, f.to
            ));
        }
    }
    out
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t & 0xffff_ffff) << 8 | (N.fetch_add(1, Ordering::Relaxed) & 0xff)
}

fn underlay_ip(index: usize) -> Ipv4Addr {
    let [a, b, c] = UNDERLAY_PREFIX;
    Ipv4Addr::new(a, b, c, 11 + index as u8)
}

fn cni_result_ip(out: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    v.get("ips")?.as_array()?.iter().find_map(|ip| {
        let addr = ip.get("address")?.as_str()?;
        addr.split('/').next()?.parse().ok()
    })
}

fn split_documents(text: &str) -> Result<Vec<Value>, Error> {
    let options = serde_saphyr::options! { with_snippet: false };
    // Empty documents are skipped by the parser.
    let parsed: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| Error::Demo(format!("cluster file is not YAML: {e}")))?;
    let mut docs = Vec::new();
    for v in parsed {
        if v.is_null() {
            continue;
        }
        // A `kind: List` is flattened so the demo can edit items one by one.
        if kind(&v) == Some("List") {
            if let Some(items) = v.get("items").and_then(Value::as_array) {
                docs.extend(items.iter().cloned());
            }
        } else {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn render_documents(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

fn name(doc: &Value) -> Option<&str> {
    doc.get("metadata")?.get("name")?.as_str()
}

fn namespace(doc: &Value) -> Option<&str> {
    doc.get("metadata")?.get("namespace")?.as_str()
}

fn set_internal_ip(doc: &mut Value, ip: Ipv4Addr) {
    if let Value::Object(map) = doc {
        let status = map
            .entry("status")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(status) = status {
            status.insert(
                "addresses".to_owned(),
                json!([{"type": "InternalIP", "address": ip.to_string()}]),
            );
        }
    }
}

fn pod_document(key: &ObjectKey, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "demo"}],
        },
    })
}

fn node_document(name: &str, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_cluster_is_valid_and_gets_underlay_addresses() {
        let mut docs = split_documents(BUNDLED_CLUSTER).unwrap();
        for (i, d) in docs
            .iter_mut()
            .filter(|d| kind(d) == Some("Node"))
            .enumerate()
        {
            set_internal_ip(d, underlay_ip(i));
        }
        let (state, problems) = parse_cluster_file(&render_documents(&docs));
        assert!(problems.is_empty(), "{problems:?}");
        let (model, problems) = ClusterModel::build(&state);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(model.nodes.len() >= 2);
        assert!(model.pods.len() >= 4);
        assert!(
            model
                .nodes
                .values()
                .all(|n| n.internal_ip.octets()[..3] == UNDERLAY_PREFIX)
        );
    }

    #[test]
    fn matrix_marks_failures() {
        let probes = vec![
            Probe {
                from: "pod a/x".into(),
                to: "pod a/y".into(),
                protocol: "icmp",
                failure: None,
                expected: true,
            },
            Probe {
                from: "pod a/x".into(),
                to: "pod a/y".into(),
                protocol: "tcp",
                failure: Some("refused".into()),
                expected: true,
            },
            Probe {
                from: "pod a/y".into(),
                to: "pod a/x".into(),
                protocol: "tcp",
                failure: Some("timeout".into()),
                expected: false,
            },
        ];
        let text = render_matrix(&probes);
        assert!(text.contains("✓/✗"), "{text}");
        assert!(
            text.contains("2 of 3 checks passed (1 expected to fail"),
            "{text}"
        );
        assert!(
            text.contains("FAILED tcp pod a/x -> pod a/y: refused"),
            "{text}"
        );
    }

    #[test]
    fn service_expectations_follow_endpoints_traffic_policy_and_network_policy() {
        use services::Endpoint;
        let ep = |name: &str, node: &str| Endpoint {
            pod: Some(ObjectKey::new("x", name)),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            port: 8080,
            node: Some(node.into()),
        };
        let names = |v: &[&str]| v.iter().map(|n| format!("x/{n}")).collect::<BTreeSet<_>>();
        let all: BTreeSet<Endpoint> = [ep("a", "n1"), ep("b", "n2")].into();
        assert_eq!(
            service_expectation(&BTreeSet::new(), None, |_| true),
            Expectation::Refused
        );
        assert_eq!(
            service_expectation(&all, None, |_| true),
            Expectation::Answer {
                by: names(&["a", "b"]),
                seen_source: None
            }
        );
        // A Local policy: only the client's node's endpoint; none there → dropped.
        assert_eq!(
            service_expectation(&all, Some("n2"), |_| true),
            Expectation::Answer {
                by: names(&["b"]),
                seen_source: None
            }
        );
        assert_eq!(
            service_expectation(&all, Some("n3"), |_| true),
            Expectation::NoAnswer
        );
        // NetworkPolicy after DNAT: some endpoints allowed → either; none → no answer.
        let only_a = |e: &Endpoint| e.pod.as_ref().is_some_and(|p| p.name == "a");
        assert_eq!(
            service_expectation(&all, None, only_a),
            Expectation::Partial { by: names(&["a"]) }
        );
        assert_eq!(
            service_expectation(&all, None, |_| false),
            Expectation::NoAnswer
        );
    }

    #[test]
    fn probe_results_are_judged_against_their_expectation() {
        let record = |connected: bool, by: Option<&str>, error: Option<&'static str>| ProbeRecord {
            from: "x/a".into(),
            to: "service:x/web".into(),
            port: 80,
            protocol: "TCP",
            try_: 0,
            connected,
            answered_by: by.map(String::from),
            from_ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            seen_source: Some(Ipv4Addr::new(10, 244, 1, 2)),
            error,
        };
        let judge = |r: ProbeRecord, expected: Expectation| {
            ProbeResult {
                record: r,
                expected,
            }
            .problem()
        };
        let by_b = Expectation::Answer {
            by: ["x/b".to_owned()].into(),
            seen_source: Some(Ipv4Addr::new(10, 244, 1, 2)),
        };
        assert_eq!(judge(record(true, Some("x/b"), None), by_b.clone()), None);
        assert!(judge(record(true, Some("x/c"), None), by_b.clone()).is_some());
        assert!(judge(record(false, None, Some("timeout")), by_b).is_some());
        assert_eq!(
            judge(record(false, None, Some("refused")), Expectation::Refused),
            None
        );
        assert!(judge(record(false, None, Some("timeout")), Expectation::Refused).is_some());
        assert!(judge(record(true, Some("x/b"), None), Expectation::NoAnswer).is_some());
        let line = ProbeResult {
            record: record(false, None, Some("refused")),
            expected: Expectation::Refused,
        }
        .json();
        assert_eq!(
            line,
            r#"{"from":"x/a","to":"service:x/web","port":80,"protocol":"TCP","try":0,"connected":false,"answered_by":null,"from_ip":"10.244.1.2","seen_source":"10.244.1.2","error":"refused"}"#
        );
    }
}
