//! The controller runtime: Kubernetes state in, every node's OVS reconciled to it.
//!
//! Owns: the long-running tasks and what they share — the model (rebuilt on every source
//! change), the address pools, the pod attachments (which pod's veth is on which port), one
//! agent per node (its OVSDB replica and OpenFlow connection), the OpenFlow listener that
//! hands each br-int connection to its node's agent, and the CNI server. Decisions are made
//! by pure functions (`model`, `compiler`, `switch_config::plan`, `reconcile::plan`); this
//! module only moves their inputs and outputs.
//!
//! State is rebuilt after a restart from the two places that outlive the process: the
//! Kubernetes objects and each node's OVSDB (pod ports carry their address in external_ids).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use switchyard_cni::api::{ErrorReply, PodNetwork, PodRef, Reply, Request, Route};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Error;
use crate::compiler::{self, LocalPod, NodeInputs};
use crate::ipam::{Ipam, format_mac, mac_for};
use crate::model::{ClusterModel, NodeModel};
use crate::pipeline::{Encap, encap_overhead};
use crate::source::{ObjectKey, POD_NETWORK_ANNOTATION, Source};
use crate::switch_config::{self, PodPort, SwitchConfig};
use crate::switch_flows::SwitchFlows;
use openflow::FlowRemoved;

/// How the controller reaches nodes and is reached by them.
#[derive(Clone, Debug)]
pub struct Config {
    /// OVSDB target of a node, with `{node}` and `{internal_ip}` replaced:
    /// `tcp:{internal_ip}:6640` in a cluster, `unix:/…/{node}/db.sock` in the demo.
    pub ovsdb_template: String,
    /// Where the controller listens for br-int connections (`ptcp:6653`, `punix:PATH`).
    pub openflow_listen: String,
    /// What each br-int is told to connect to (`tcp:CONTROLLER_IP:6653`, `unix:PATH`);
    /// `{node}` and `{internal_ip}` are replaced. ovs-vswitchd only connects to a `unix:`
    /// socket inside its own run directory, hence the template.
    pub openflow_target: String,
    /// Where the CNI shim reaches the controller (`unix:PATH` or `tcp:IP:PORT`).
    pub cni_listen: String,
    /// Tunnel type.
    pub encap: Encap,
    /// MTU of the node's underlay; pods get this minus the encapsulation overhead.
    pub underlay_mtu: u32,
    /// OVS datapath type for br-int: `netdev` (userspace) or `system`.
    pub datapath_type: String,
    /// How long a CNI ADD waits for its pod to appear and its flows to be installed.
    pub cni_timeout: Duration,
}

/// CNI error code: the pod is not (yet) known to the controller.
pub const CNI_UNKNOWN_POD: u32 = 110;
/// CNI error code: no address could be allocated.
pub const CNI_NO_ADDRESS: u32 = 111;
/// CNI error code: the pod's flows were not installed in time.
pub const CNI_NOT_READY: u32 = 112;
/// CNI error code: the request itself is malformed.
pub const CNI_BAD_REQUEST: u32 = 113;
/// CNI error code (spec): the plugin is not available (STATUS).
pub const CNI_UNAVAILABLE: u32 = 50;

struct Shared {
    config: Config,
    source: Source,
    model: watch::Sender<Arc<ClusterModel>>,
    ipam: Mutex<Ipam>,
    attachments: Mutex<BTreeMap<ObjectKey, PodPort>>,
    /// Pods whose flows are on their node's switch, with the container id they were made for.
    installed: watch::Sender<BTreeMap<ObjectKey, String>>,
    agents: Mutex<BTreeMap<String, AgentHandle>>,
}

struct AgentHandle {
    wake: Arc<Notify>,
    openflow: Arc<Mutex<Option<openflow::Connection>>>,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn wake(&self, node: &str) {
        if let Some(a) = lock(&self.agents).get(node) {
            a.wake.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the controller until the source ends or a listener fails.
pub async fn run(config: Config, source: Source) -> Result<(), Error> {
    let mut states = source.subscribe();
    let (model, _) = watch::channel(Arc::new(ClusterModel::default()));
    let (installed, _) = watch::channel(BTreeMap::new());
    let shared = Arc::new(Shared {
        config: config.clone(),
        source,
        model,
        ipam: Mutex::new(Ipam::default()),
        attachments: Mutex::new(BTreeMap::new()),
        installed,
        agents: Mutex::new(BTreeMap::new()),
    });
    let listener = openflow::Listener::bind(&config.openflow_listen)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot listen for OpenFlow on {}: {e}",
                config.openflow_listen
            ))
        })?;
    info!(listen = %config.openflow_listen, "waiting for br-int connections");
    let cni = CniListener::bind(&config.cni_listen).await?;
    info!(listen = %config.cni_listen, "CNI server ready");
    let mut of_task = tokio::spawn(accept_switches(shared.clone(), listener));
    let mut cni_task = tokio::spawn(serve_cni(shared.clone(), cni));

    let result = loop {
        let state = states.borrow_and_update().clone();
        apply_model(&shared, &state);
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    break Err(Error::Config("the source of Kubernetes objects ended".into()));
                }
            }
            _ = &mut of_task => break Err(Error::Config("the OpenFlow listener stopped".into())),
            _ = &mut cni_task => break Err(Error::Config("the CNI server stopped".into())),
        }
    };
    of_task.abort();
    cni_task.abort();
    lock(&shared.agents).clear();
    result
}

/// Applies a new cluster state: rebuilds the model, releases what departed pods and nodes
/// held, starts and stops node agents, and wakes every agent.
fn apply_model(shared: &Arc<Shared>, state: &crate::source::ClusterState) {
    let (model, problems) = ClusterModel::build(state);
    for p in &problems {
        warn!(object = %p.object, field = %p.field, "skipping invalid object: {}", p.reason);
    }
    {
        let mut ipam = lock(&shared.ipam);
        let gone: Vec<String> = ipam
            .nodes()
            .filter(|n| !model.nodes.contains_key(*n))
            .map(String::from)
            .collect();
        for n in gone {
            ipam.remove_node(&n);
        }
        for node in model.nodes.values() {
            ipam.set_node(&node.name, node.pod_cidr);
        }
        // A pod that is gone from the cluster gives back its address and its port.
        let departed: Vec<ObjectKey> = ipam
            .allocations()
            .filter(|(k, node, _)| model.pods.get(*k).is_none_or(|p| p.node != *node))
            .map(|(k, _, _)| k.clone())
            .collect();
        let mut attachments = lock(&shared.attachments);
        for k in departed {
            if let Some(ip) = ipam.release(&k) {
                info!(pod = %k, %ip, "pod deleted: address released");
            }
            attachments.remove(&k);
        }
        attachments.retain(|k, _| model.pods.contains_key(k));
        // Addresses recorded on pod objects come back first, so a node whose OVSDB was
        // lost still gives its pods the addresses they had.
        for pod in model.pods.values() {
            if let Some(ip) = pod.recorded_ip
                && ipam.address_of(&pod.key).is_none()
                && let Err(e) = ipam.restore(&pod.node, &pod.key, ip)
            {
                warn!(pod = %pod.key, %ip, "recorded address not restored: {e}");
            }
        }
    }
    let model = Arc::new(model);
    shared.model.send_replace(model.clone());
    let mut agents = lock(&shared.agents);
    agents.retain(|name, _| {
        let keep = model.nodes.contains_key(name);
        if !keep {
            info!(node = %name, "node removed: stopping its agent");
        }
        keep
    });
    for name in model.nodes.keys() {
        if !agents.contains_key(name) {
            info!(node = %name, "new node: starting its agent");
            agents.insert(name.clone(), spawn_agent(shared.clone(), name.clone()));
        }
    }
    for a in agents.values() {
        a.wake.notify_one();
    }
}

fn spawn_agent(shared: Arc<Shared>, node: String) -> AgentHandle {
    let wake = Arc::new(Notify::new());
    let openflow = Arc::new(Mutex::new(None));
    let (ready_tx, ready) = watch::channel(false);
    let task = tokio::spawn(node_agent(
        shared,
        node,
        wake.clone(),
        openflow.clone(),
        ready_tx,
    ));
    AgentHandle {
        wake,
        openflow,
        ready,
        task,
    }
}

/// Fills `{node}` and `{internal_ip}` in a per-node target template.
fn node_target(template: &str, node: &NodeModel) -> String {
    template
        .replace("{node}", &node.name)
        .replace("{internal_ip}", &node.internal_ip.to_string())
}

const OVSDB_TABLES: [&str; 6] = [
    "Open_vSwitch",
    "Bridge",
    "Port",
    "Interface",
    "Controller",
    "Flow_Table",
];

/// One node's agent: keeps its OVSDB and flows equal to the model, for as long as the node
/// exists. Every failure is logged and retried with backoff; nothing here ends the process.
async fn node_agent(
    shared: Arc<Shared>,
    node: String,
    wake: Arc<Notify>,
    openflow: Arc<Mutex<Option<openflow::Connection>>>,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(model) = shared.model.borrow().nodes.get(&node).cloned() else {
            return;
        };
        let target = node_target(&shared.config.ovsdb_template, &model);
        match ovsdb::Replica::start(&target, ovsdb::vswitch::DATABASE, OVSDB_TABLES).await {
            Ok(replica) => {
                info!(node = %node, %target, "OVSDB connected");
                backoff = Duration::from_millis(100);
                let r = serve_node(&shared, &node, &replica, &wake, &openflow, &ready).await;
                if let Err(e) = r {
                    warn!(node = %node, "node agent: {e}; starting over");
                }
            }
            Err(e) => {
                debug!(node = %node, %target, "OVSDB not reachable yet: {e}");
            }
        }
        ready.send_replace(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn serve_node(
    shared: &Arc<Shared>,
    node: &str,
    replica: &ovsdb::Replica,
    wake: &Arc<Notify>,
    openflow: &Arc<Mutex<Option<openflow::Connection>>>,
    ready: &watch::Sender<bool>,
) -> Result<(), Error> {
    // Forward replica changes as wake-ups: an ofport appearing is a reason to recompile.
    let mut changes = replica.changes();
    let forward = {
        let wake = wake.clone();
        tokio::spawn(async move {
            if let Some(rx) = changes.as_mut() {
                while rx.recv().await.is_some() {
                    wake.notify_one();
                }
            }
        })
    };
    let _forward = AbortOnDrop(forward);
    restore_attachments(shared, node, &replica.snapshot());
    let mut flows = SwitchFlows::default();
    // The connection whose asynchronous messages are being watched, and what they said.
    let mut watched: Option<openflow::Connection> = None;
    let mut reported_errors = BTreeMap::new();
    let mut _watcher: Option<AbortOnDrop> = None;
    let (removed_tx, mut removed_rx) = tokio::sync::mpsc::unbounded_channel::<FlowRemoved>();
    loop {
        while let Ok(removed) = removed_rx.try_recv() {
            if flows.note_removed(&removed) {
                warn!(node = %node, table = removed.table_id, priority = removed.priority,
                    cookie = format!("{:#x}", removed.cookie),
                    "a flow was deleted behind the controller's back; restoring it");
            }
        }
        let model = shared.model.borrow().clone();
        let Some(this) = model.nodes.get(node) else {
            return Ok(());
        };
        let attachments: Vec<PodPort> = lock(&shared.attachments)
            .values()
            .filter(|p| model.pods.get(&p.pod).is_some_and(|m| m.node == node))
            .cloned()
            .collect();
        let desired = SwitchConfig {
            datapath_type: shared.config.datapath_type.clone(),
            datapath_id: format!("{:016x}", switch_config::datapath_id(node)),
            controller_target: node_target(&shared.config.openflow_target, this),
            encap: shared.config.encap,
            gateway_mac: compiler::gateway_mac(this),
            pod_ports: attachments.clone(),
        };
        let snapshot = replica.snapshot();
        // vswitchd's word on interfaces it could not set up (a veth gone, a bad type).
        let errors = switch_config::interface_errors(&snapshot);
        if errors != reported_errors {
            for (iface, error) in errors
                .iter()
                .filter(|(i, e)| reported_errors.get(*i) != Some(*e))
            {
                warn!(node = %node, %iface, "ovs-vswitchd: {error}");
            }
            reported_errors = errors;
        }
        let txn = switch_config::plan(&snapshot, &desired);
        if !txn.is_empty() {
            let client = replica
                .client()
                .ok_or_else(|| Error::Config(format!("node {node}: OVSDB connection lost")))?;
            let n = txn.operations().len();
            let sent = txn.to_params(ovsdb::vswitch::DATABASE);
            client
                .transact(ovsdb::vswitch::DATABASE, txn)
                .await
                .map_err(|e| Error::Ovsdb {
                    node: node.into(),
                    source: Box::new(e),
                })?;
            info!(node = %node, operations = n, "OVSDB updated");
            // Plan the next step from the replica once it shows our transaction, never from
            // a snapshot that predates it (that would insert the same rows twice).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < deadline
                && switch_config::plan(&replica.snapshot(), &desired)
                    .to_params(ovsdb::vswitch::DATABASE)
                    == sent
            {
                wait_or_timeout(wake, Duration::from_millis(20)).await;
            }
            continue;
        }

        let conn = lock(openflow).clone();
        if let Some(conn) = &conn
            && !watched.as_ref().is_some_and(|w| w.same_as(conn))
        {
            watched = Some(conn.clone());
            _watcher = conn.take_events().map(|mut events| {
                let (tx, wake) = (removed_tx.clone(), wake.clone());
                AbortOnDrop(tokio::spawn(async move {
                    while let Some(message) = events.recv().await {
                        if let openflow::Message::FlowRemoved(r) = message {
                            let _ = tx.send(r);
                            wake.notify_one();
                        }
                    }
                }))
            });
        }
        if let Some(conn) = conn {
            let ofports = switch_config::ofports(&snapshot);
            let pods: Vec<LocalPod> = attachments
                .iter()
                .filter_map(|p| {
                    Some(LocalPod {
                        key: p.pod.clone(),
                        ip: p.ip,
                        mac: p.mac,
                        ofport: *ofports.get(&p.iface)?,
                    })
                })
                .collect();
            let inputs = NodeInputs {
                node: this,
                pods: &pods,
                remote_nodes: model.nodes.values().collect(),
            };
            let desired_flows = compiler::node_flows(&inputs);
            match flows.sync(node, &conn, &desired_flows).await {
                Ok(()) => {
                    let in_flows: BTreeMap<ObjectKey, String> = attachments
                        .iter()
                        .filter(|a| pods.iter().any(|p| p.key == a.pod))
                        .map(|a| (a.pod.clone(), a.container_id.clone()))
                        .collect();
                    publish_installed(shared, node, &model, in_flows);
                    ready.send_replace(true);
                }
                Err(e) => {
                    warn!(node = %node, "OpenFlow: {e}; waiting for br-int to reconnect");
                    let mut slot = lock(openflow);
                    if slot.as_ref().is_some_and(|c| c.same_as(&conn)) {
                        *slot = None;
                    }
                    flows = SwitchFlows::default();
                    ready.send_replace(false);
                }
            }
        }
        wait_or_timeout(wake, Duration::from_secs(30)).await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_or_timeout(wake: &Notify, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, wake.notified()).await;
}

/// Rebuilds attachments and addresses from the pod ports a previous controller left on
/// the node. A port whose pod is gone is left out, so the next plan removes it.
fn restore_attachments(shared: &Shared, node: &str, snapshot: &ovsdb::Snapshot) {
    let model = shared.model.borrow().clone();
    let mut ipam = lock(&shared.ipam);
    let mut attachments = lock(&shared.attachments);
    for port in switch_config::pod_ports(snapshot) {
        let on_node = model.pods.get(&port.pod).is_some_and(|p| p.node == node);
        if !on_node || attachments.contains_key(&port.pod) {
            continue;
        }
        match ipam.restore(node, &port.pod, port.ip) {
            Ok(()) => {
                info!(node = %node, pod = %port.pod, ip = %port.ip, iface = %port.iface,
                    "restored pod attachment from OVSDB");
                attachments.insert(port.pod.clone(), port);
            }
            Err(e) => warn!(node = %node, pod = %port.pod, "cannot restore attachment: {e}"),
        }
    }
}

fn publish_installed(
    shared: &Shared,
    node: &str,
    model: &ClusterModel,
    in_flows: BTreeMap<ObjectKey, String>,
) {
    shared.installed.send_if_modified(|installed| {
        let before = installed.clone();
        installed.retain(|k, _| model.pods.get(k).is_some_and(|p| p.node != node));
        installed.extend(in_flows);
        *installed != before
    });
}

/// Accepts br-int connections and gives each to the agent of the node whose datapath id
/// it carries.
async fn accept_switches(shared: Arc<Shared>, listener: openflow::Listener) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("OpenFlow listener: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let dpid = conn.datapath_id();
        let model = shared.model.borrow().clone();
        let node = model
            .nodes
            .keys()
            .find(|n| switch_config::datapath_id(n) == dpid)
            .cloned();
        match node {
            Some(node) => {
                info!(node = %node, dpid = format!("{dpid:016x}"), "br-int connected");
                if let Some(a) = lock(&shared.agents).get(&node) {
                    *lock(&a.openflow) = Some(conn);
                    a.wake.notify_one();
                }
            }
            None => warn!(
                dpid = format!("{dpid:016x}"),
                "a switch connected whose datapath id is no node's br-int; ignoring it"
            ),
        }
    }
}

// ---- CNI ----------------------------------------------------------------------------

enum CniListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl CniListener {
    async fn bind(target: &str) -> Result<CniListener, Error> {
        let fail =
            |e: std::io::Error| Error::Config(format!("cannot listen for CNI on {target}: {e}"));
        if let Some(path) = target.strip_prefix("unix:") {
            // A socket file left by a previous controller would make bind fail.
            let _ = std::fs::remove_file(path);
            Ok(CniListener::Unix(
                tokio::net::UnixListener::bind(path).map_err(fail)?,
            ))
        } else if let Some(addr) = target.strip_prefix("tcp:") {
            Ok(CniListener::Tcp(
                tokio::net::TcpListener::bind(addr).await.map_err(fail)?,
            ))
        } else {
            Err(Error::Config(format!(
                "--cni-listen {target:?}: use unix:PATH or tcp:IP:PORT"
            )))
        }
    }
}

async fn serve_cni(shared: Arc<Shared>, listener: CniListener) {
    loop {
        match &listener {
            CniListener::Unix(l) => match l.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(cni_connection(shared.clone(), stream));
                }
                Err(e) => warn!("CNI accept: {e}"),
            },
            CniListener::Tcp(l) => match l.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(cni_connection(shared.clone(), stream));
                }
                Err(e) => warn!("CNI accept: {e}"),
            },
        }
    }
}

/// Longest request line accepted from a CNI shim.
const MAX_CNI_REQUEST: usize = 64 * 1024;

async fn cni_connection<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, stream: S) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        (&mut reader)
            .take(MAX_CNI_REQUEST as u64)
            .read_line(&mut line),
    )
    .await;
    let reply = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => handle_cni(&shared, request).await,
            Err(e) => error_reply(
                CNI_BAD_REQUEST,
                "malformed request",
                format!("not a pod-attach request: {e}"),
            ),
        },
        Ok(Err(e)) => error_reply(CNI_BAD_REQUEST, "unreadable request", e.to_string()),
        Err(_) => error_reply(
            CNI_BAD_REQUEST,
            "no request",
            "nothing arrived within 10 s".into(),
        ),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let mut stream = reader.into_inner();
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

fn error_reply(code: u32, msg: &str, details: String) -> Reply {
    Reply::Error(ErrorReply {
        code,
        msg: msg.into(),
        details,
    })
}

async fn handle_cni(shared: &Arc<Shared>, request: Request) -> Reply {
    match request {
        Request::Add(pod) => cni_add(shared, pod).await,
        Request::Del(pod) => cni_del(shared, pod).await,
        Request::Check(pod) => cni_check(shared, pod),
        Request::Status { node } => cni_status(shared, node.as_deref()),
    }
}

fn pod_network(shared: &Shared, node: &NodeModel, ip: Ipv4Addr) -> PodNetwork {
    let gw = IpAddr::V4(node.gateway_ip());
    PodNetwork {
        address: IpNet::V4(Ipv4Net::new(ip, node.pod_cidr.prefix_len()).unwrap_or(node.pod_cidr)),
        mac: format_mac(mac_for(ip)),
        gateway: gw,
        mtu: shared
            .config
            .underlay_mtu
            .saturating_sub(encap_overhead(shared.config.encap)),
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().unwrap_or(IpNet::V4(Ipv4Net::default())),
            gw: Some(gw),
        }],
        userspace_datapath: shared.config.datapath_type == "netdev",
    }
}

async fn cni_add(shared: &Arc<Shared>, req: PodRef) -> Reply {
    let key = ObjectKey::new(&req.namespace, &req.pod);
    if req.host_iface.is_empty() || req.host_iface.len() > 15 {
        return error_reply(
            CNI_BAD_REQUEST,
            "bad host interface name",
            format!("{:?} is not a Linux interface name", req.host_iface),
        );
    }
    // The runtime may call us before the watch has delivered the pod: wait for it.
    let mut models = shared.model.subscribe();
    let wait = tokio::time::timeout(shared.config.cni_timeout, async {
        loop {
            let model = models.borrow_and_update().clone();
            if let Some(p) = model.pods.get(&key)
                && let Some(n) = model.nodes.get(&p.node)
            {
                return Some(n.clone());
            }
            if models.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    let Ok(Some(node)) = wait else {
        return error_reply(
            CNI_UNKNOWN_POD,
            "unknown pod",
            format!(
                "pod {key} is not in the cluster state (or its node has no valid Node object) after {:?}",
                shared.config.cni_timeout
            ),
        );
    };
    let ip = match lock(&shared.ipam).allocate(&node.name, &key) {
        Ok(ip) => ip,
        Err(e) => return error_reply(CNI_NO_ADDRESS, "no address", e.to_string()),
    };
    let port = PodPort {
        iface: req.host_iface.clone(),
        pod: key.clone(),
        ip,
        mac: mac_for(ip),
        container_id: req.container_id.clone(),
    };
    lock(&shared.attachments).insert(key.clone(), port);
    info!(pod = %key, node = %node.name, %ip, iface = %req.host_iface, "CNI ADD");
    shared.wake(&node.name);

    let mut installed = shared.installed.subscribe();
    let ready = tokio::time::timeout(shared.config.cni_timeout, async {
        loop {
            if installed.borrow_and_update().get(&key) == Some(&req.container_id) {
                return true;
            }
            if installed.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    if ready != Ok(true) {
        return error_reply(
            CNI_NOT_READY,
            "flows not installed in time",
            format!(
                "pod {key} on node {}: its port or flows were not in place after {:?}; is the node's br-int connected to the controller?",
                node.name, shared.config.cni_timeout
            ),
        );
    }
    let annotation = serde_json::json!({
        "ip": ip.to_string(), "mac": format_mac(mac_for(ip)), "node": node.name,
    })
    .to_string();
    if let Err(e) = shared
        .source
        .annotate_pod(&key, POD_NETWORK_ANNOTATION, &annotation)
        .await
    {
        warn!(pod = %key, "cannot record the allocation on the pod: {e}");
    }
    Reply::Ok(Some(pod_network(shared, &node, ip)))
}

async fn cni_del(shared: &Arc<Shared>, req: PodRef) -> Reply {
    let key = ObjectKey::new(&req.namespace, &req.pod);
    let removed = {
        let mut attachments = lock(&shared.attachments);
        // A DEL for an older sandbox must not tear down the current one.
        let matches = attachments
            .get(&key)
            .is_some_and(|a| req.container_id.is_empty() || a.container_id == req.container_id);
        if matches {
            attachments.remove(&key)
        } else {
            None
        }
    };
    let Some(_) = removed else {
        return Reply::Ok(None);
    };
    let node = shared.model.borrow().pods.get(&key).map(|p| p.node.clone());
    info!(pod = %key, "CNI DEL");
    if let Some(node) = node {
        shared.wake(&node);
        // Wait (briefly) until the flows are gone, so a re-ADD never races the removal.
        let mut installed = shared.installed.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while installed.borrow_and_update().contains_key(&key) {
                if installed.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    Reply::Ok(None)
}

fn cni_check(shared: &Arc<Shared>, req: PodRef) -> Reply {
    let key = ObjectKey::new(&req.namespace, &req.pod);
    let attachment = lock(&shared.attachments).get(&key).cloned();
    let model = shared.model.borrow().clone();
    match attachment {
        Some(a) if a.container_id == req.container_id => {
            match model.pods.get(&key).and_then(|p| model.nodes.get(&p.node)) {
                Some(node) => Reply::Ok(Some(pod_network(shared, node, a.ip))),
                None => error_reply(
                    CNI_UNKNOWN_POD,
                    "unknown pod",
                    format!("{key} is not in the cluster state"),
                ),
            }
        }
        Some(a) => error_reply(
            CNI_UNKNOWN_POD,
            "different sandbox",
            format!(
                "{key} is attached for container {}, not {}",
                a.container_id, req.container_id
            ),
        ),
        None => error_reply(
            CNI_UNKNOWN_POD,
            "not attached",
            format!("{key} has no port on its node"),
        ),
    }
}

fn cni_status(shared: &Arc<Shared>, node: Option<&str>) -> Reply {
    let agents = lock(&shared.agents);
    let not_ready: BTreeSet<&String> = agents
        .iter()
        .filter(|(n, a)| node.is_none_or(|want| want == n.as_str()) && !*a.ready.borrow())
        .map(|(n, _)| n)
        .collect();
    if let Some(n) = node
        && !agents.contains_key(n)
    {
        return error_reply(
            CNI_UNAVAILABLE,
            "unknown node",
            format!("no valid Node object named {n}"),
        );
    }
    if not_ready.is_empty() {
        Reply::Ok(None)
    } else {
        error_reply(
            CNI_UNAVAILABLE,
            "not ready",
            format!("OVS not reconciled yet on: {not_ready:?}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovsdb_targets_are_filled_from_the_node() {
        let node = NodeModel {
            name: "n1".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            internal_ip: Ipv4Addr::new(192, 168, 77, 11),
        };
        assert_eq!(
            node_target("tcp:{internal_ip}:6640", &node),
            "tcp:192.168.77.11:6640"
        );
        assert_eq!(
            node_target("unix:/x/{node}/db.sock", &node),
            "unix:/x/n1/db.sock"
        );
    }
}
