//! The node agent: one task per node that keeps the node's OVSDB and br-int equal to the
//! network state.
//!
//! Owns: the node's OVSDB replica and the transactions that bring it to the desired rows
//! (`switch_config::plan`: br-int, tunnel, gateway, pod ports); the br-int connection it was
//! handed; the node's desired pipeline by owner and what the switch holds (`realise`).
//!
//! The state task marks owners dirty ([`Agent::mark`]); the agent recomputes exactly those
//! owners' flows and sends the difference in one bundle. A pod change on another node costs
//! this agent nothing. What the switch holds is never assumed across connections: a new
//! br-int connection is a new switch (vswitchd restarted, or the controller did), so it is
//! read back before anything is diffed against it, and every owner is recomputed. When the
//! node's vswitchd was started with `other_config:flow-restore-wait=true`, the agent clears
//! the key once groups and flows are in, so the datapath forwards only with a whole pipeline.
//!
//! Changes made by others are noticed as they happen: the switch reports deletions of our
//! flows (FLOW_REMOVED; every flow is installed with `send_flow_rem`) and, where it supports
//! flow monitors, every flow another connection adds, changes or deletes. Those keys are
//! put right at once; a periodic re-read ([`REREAD_INTERVAL`]) is the backstop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use openflow::{FlowStatsRequest, Message};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::features::{self, NodeContext, Owner};
use crate::model::NodeModel;
use crate::pipeline::Encap;
use crate::realise::{self, Desired, Dirty, FlowKey, Installed};
use crate::source::ObjectKey;
use crate::state::{ChangeSet, Snapshot};
use crate::switch_config::{self, InterfaceView, PodPort, SwitchConfig};
use crate::telemetry::{self, RealisationEvent, Telemetry};

/// The OVSDB lock every agent holds on its node's ovsdb-server and asserts in every
/// transaction: of two controllers writing one node, only the holder's transactions commit.
/// An agent takes it with `steal` (a new leader fences the old one off) and, once it was
/// stolen from it, never writes that node again in its term.
pub const OVSDB_LOCK: &str = "switchyard";

/// How often the agent reads a switch's flows back even when nothing told it to: a safety
/// net for changes that leave no notice.
pub const REREAD_INTERVAL: Duration = Duration::from_secs(300);

/// How many owners one realisation leaves out because br-int refused their flows before it
/// gives up and treats the refusal as the connection's error.
const MAX_REFUSALS_PER_REALISATION: usize = 8;

/// How a node's OVSDB is reached.
#[derive(Clone, Debug)]
pub enum SwitchDb {
    /// The node's ovsdb-server, at this target template (`{node}`, `{internal_ip}`).
    Ovsdb(String),
    /// The node's ovsdb-server over TLS (an `ssl:` template): its certificate must chain
    /// to the CA of the client configuration and name the node (subjectAltName = node
    /// name); ours is presented.
    OvsdbTls(String, Arc<switchyard_tls::ClientConfig>),
    /// No OVSDB (the scale benchmark's simulated switches): every attached pod's port is
    /// taken as present, with ofports numbered in order of attachment, as vswitchd would.
    Simulated,
}

/// What every agent needs to know.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where the node's OVSDB is.
    pub switch_db: SwitchDb,
    /// What br-int is told to connect to (`{node}`, `{internal_ip}` replaced).
    pub openflow_target: String,
    /// Tunnel type.
    pub encap: Encap,
    /// br-int's datapath type.
    pub datapath_type: String,
    /// How many agents may realise a whole switch at once (a new connection, a re-read).
    /// A whole pipeline's flow bodies and messages exist only while it is sent; bounding
    /// the concurrency bounds the controller's memory at cold start (1000 switches
    /// connecting at once) without slowing it: the work is CPU-bound anyway.
    pub full_realisations: Arc<tokio::sync::Semaphore>,
    /// Flows that are the same on every switch, computed once for all agents.
    pub shared: Arc<SharedFlows>,
    /// Where the agents report realisations, errors and drift (metrics, `WatchEvents`).
    pub telemetry: Arc<Telemetry>,
    /// NetworkPolicy audit logging: the audit meter's settings, where audit lines go.
    pub audit: Arc<crate::audit::AuditLog>,
}

/// The flows every agent would otherwise compute alike: one per remote node, the same on
/// every node that reaches it (see `features::remote_node`). At 1000 nodes these are 999
/// of each node's 1622 flows; computed and prepared once per remote node (and again when
/// that node's model changes), they cost each agent reference counts, not a computation.
/// A cache in front of a pure function: what it returns is exactly what
/// `features::owner_flows` computes.
#[derive(Debug, Default)]
pub struct SharedFlows {
    remote_nodes: Mutex<HashMap<Arc<str>, SharedEntry>>,
    services: Mutex<HashMap<ObjectKey, ServiceEntry>>,
}

/// The flows and groups computed for a Service, and the resolution they were computed from.
type ServiceEntry = (
    Arc<crate::state::ResolvedService>,
    Arc<[realise::Prepared]>,
    Arc<[openflow::GroupDesc]>,
);

/// The flows computed for a remote node, and the model they were computed from.
type SharedEntry = (Arc<NodeModel>, Arc<[realise::Prepared]>);

impl SharedFlows {
    /// The flows of `owner` on the context's node, prepared; shared where they can be.
    pub fn parts(&self, owner: &Owner, ctx: &NodeContext<'_>) -> realise::Parts {
        if let Owner::Service(key) = owner {
            return self.service_parts(key, ctx);
        }
        let Owner::RemoteNode(name) = owner else {
            return features::owner_parts(owner, ctx);
        };
        let remote = ctx.state.node(name).filter(|r| r.name != ctx.node.name);
        let mut cache = lock(&self.remote_nodes);
        let Some(remote) = remote else {
            if ctx.state.node(name).is_none() {
                cache.remove(&**name);
            }
            return realise::Parts::default();
        };
        let shared = match cache.get(&**name) {
            Some((model, flows)) if Arc::ptr_eq(model, remote) || model == remote => flows.clone(),
            _ => {
                let flows: Arc<[realise::Prepared]> = features::owner_flows(owner, ctx)
                    .into_iter()
                    .map(realise::Prepared::new)
                    .collect();
                cache.insert(remote.name.clone(), (remote.clone(), flows.clone()));
                flows
            }
        };
        realise::Parts {
            shared,
            ..realise::Parts::default()
        }
    }
}

impl SharedFlows {
    /// A Service's flows and groups: those the same on every node computed once per
    /// resolution, those of its Local traffic policies per node.
    fn service_parts(&self, key: &ObjectKey, ctx: &NodeContext<'_>) -> realise::Parts {
        let mut cache = lock(&self.services);
        let Some(svc) = ctx.state.service(key) else {
            cache.remove(key);
            return realise::Parts::default();
        };
        let (flows, groups) = match cache.get(key) {
            Some((model, flows, groups)) if Arc::ptr_eq(model, svc) || model == svc => {
                (flows.clone(), groups.clone())
            }
            _ => {
                let mut shared = Vec::new();
                features::service::flows(svc, &mut shared);
                let flows: Arc<[realise::Prepared]> =
                    shared.into_iter().map(realise::Prepared::new).collect();
                let groups: Arc<[openflow::GroupDesc]> = features::service::groups(svc).into();
                cache.insert(key.clone(), (svc.clone(), flows.clone(), groups.clone()));
                (flows, groups)
            }
        };
        // What Local traffic policies make differ per node, computed for this node.
        let mut node_flows = Vec::new();
        let mut groups = groups.to_vec();
        if svc.node_dependent() {
            features::service::node_flows(svc, ctx.node, &mut node_flows);
            groups.extend(features::service::node_groups(svc, ctx.node));
        }
        realise::Parts {
            flows: node_flows,
            shared: flows,
            groups,
            ..realise::Parts::default()
        }
    }
}

impl AgentConfig {
    /// The default bound of [`AgentConfig::full_realisations`].
    pub const FULL_REALISATIONS: usize = 4;

    /// Agents reaching `switch_db`, telling br-int to connect to `openflow_target`, with
    /// the default realisation bound and fresh shared flows, telemetry and audit log
    /// (replace those with `..` where they are shared with the rest of the controller).
    pub fn new(
        switch_db: SwitchDb,
        openflow_target: String,
        encap: Encap,
        datapath_type: String,
    ) -> AgentConfig {
        AgentConfig {
            switch_db,
            openflow_target,
            encap,
            datapath_type,
            full_realisations: Arc::new(tokio::sync::Semaphore::new(Self::FULL_REALISATIONS)),
            shared: Default::default(),
            telemetry: Default::default(),
            audit: Default::default(),
        }
    }
}

/// What the agent asks of the state task.
pub trait StatePort: Send + Sync + 'static {
    /// The latest state.
    fn snapshot(&self) -> Snapshot;
    /// Hands the state the attachments found on the node's OVSDB; the state task marks
    /// the owners that changed. The receiver completes once the state holds them: the
    /// agent must not plan the node's OVSDB before (it would delete the ports it has not
    /// taken back yet).
    fn restore_attachments(&self, node: &str, ports: Vec<PodPort>) -> oneshot::Receiver<()>;
}

/// How an agent is doing, for CNI STATUS, logs, metrics and the admin API.
#[derive(Clone, Debug, Default)]
pub struct AgentStatus {
    /// The node's OVSDB is connected.
    pub ovsdb_connected: bool,
    /// Since when the OVSDB connection is up.
    pub ovsdb_connected_since: Option<SystemTime>,
    /// Since when the br-int connection the agent realises against is up.
    pub openflow_connected_since: Option<SystemTime>,
    /// Groups desired on the switch.
    pub groups_desired: usize,
    /// Meters desired on the switch.
    pub meters_desired: usize,
    /// br-int is connected and its flows are realised.
    pub ready: bool,
    /// Flows desired on the switch.
    pub flows_desired: usize,
    /// Flows the switch holds, as far as the agent knows.
    pub flows_installed: usize,
    /// The last realisation: when, how long it took, how many changes it sent.
    pub last_realisation: Option<(Instant, Duration, usize)>,
    /// The last error, with when it happened.
    pub last_error: Option<(Instant, String)>,
    /// Another controller took this node over (stole the OVSDB lock, or br-int made it
    /// master with a newer generation): the agent has stopped for the rest of its term.
    pub fenced: bool,
    /// Times the agent planned the node's OVSDB rows (copied the replica and compared it
    /// with what the node should have); wakes that change none of its inputs skip it.
    pub ovsdb_plans: u64,
}

/// The inputs of one OVSDB plan (see `serve`).
#[derive(PartialEq)]
struct PlanInputs {
    replica_generation: u64,
    node: Arc<NodeModel>,
    attachments: Vec<Arc<PodPort>>,
    live: bool,
}

#[derive(Debug, Default)]
struct Marks {
    owners: BTreeSet<Owner>,
    all: bool,
    /// When the oldest mark not yet realised was made (the realisation latency's start).
    since: Option<Instant>,
}

/// A running node agent. Dropping it stops the task (the switch keeps its flows).
pub struct Agent {
    marks: Arc<Mutex<Marks>>,
    wake: Arc<Notify>,
    openflow: Arc<Mutex<Option<openflow::Connection>>>,
    /// How the agent is doing.
    pub status: watch::Receiver<AgentStatus>,
    /// The node's pods whose port is in the node's OVSDB and whose flows are on its switch.
    pub installed: watch::Receiver<Arc<BTreeMap<ObjectKey, InstalledPod>>>,
    /// Every interface of the node's OVSDB, as the agent's replica last showed it.
    pub ports: watch::Receiver<Arc<BTreeMap<String, InterfaceView>>>,
    /// Realisation events (bundles sent), for benchmarks and the admin API.
    pub realised: watch::Receiver<Realised>,
    task: JoinHandle<()>,
}

/// A pod whose port is in the node's OVSDB and whose flows are on the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPod {
    /// The CNI container id the attachment was made for.
    pub container_id: String,
    /// The host end of its veth.
    pub iface: String,
    /// The OpenFlow port its flows use.
    pub ofport: u32,
    /// When the agent first saw it installed (with this container and port).
    pub since: SystemTime,
}

/// The latest realisation of an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Realised {
    /// How many bundles were sent so far.
    pub bundles: u64,
    /// The highest state version whose changes are realised.
    pub version: u64,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agent {
    /// Starts the agent of `node`.
    /// `generation`: the OpenFlow master generation id of this term (leader election), asked
    /// for on every br-int connection; `None` asks for no role (a sole controller).
    pub fn spawn(
        config: Arc<AgentConfig>,
        state: Arc<dyn StatePort>,
        node: String,
        generation: Option<u64>,
    ) -> Agent {
        let marks = Arc::new(Mutex::new(Marks {
            owners: BTreeSet::new(),
            all: true,
            since: Some(Instant::now()),
        }));
        let wake = Arc::new(Notify::new());
        let openflow = Arc::new(Mutex::new(None));
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (installed_tx, installed) = watch::channel(Arc::new(BTreeMap::new()));
        let (ports_tx, ports) = watch::channel(Arc::new(BTreeMap::new()));
        let (realised_tx, realised) = watch::channel(Realised::default());
        let task = tokio::spawn(
            Worker {
                config,
                state,
                node,
                generation,
                marks: marks.clone(),
                wake: wake.clone(),
                openflow: openflow.clone(),
                status: status_tx,
                installed: installed_tx,
                installed_from: Mutex::new(None),
                ports: ports_tx,
                realised: realised_tx,
            }
            .run(),
        );
        Agent {
            marks,
            wake,
            openflow,
            status,
            installed,
            ports,
            realised,
            task,
        }
    }

    /// Marks an owner's flows for recomputation.
    pub fn mark(&self, owner: Owner) {
        let mut marks = lock(&self.marks);
        if !marks.all {
            marks.owners.insert(owner);
        }
        marks.since.get_or_insert_with(Instant::now);
        drop(marks);
        self.wake.notify_one();
    }

    /// Marks every owner of the node (its own model changed).
    pub fn mark_all(&self) {
        let mut marks = lock(&self.marks);
        marks.all = true;
        marks.owners.clear();
        marks.since.get_or_insert_with(Instant::now);
        drop(marks);
        self.wake.notify_one();
    }

    /// The node's br-int connection, if it has one (CNI CHECK reads the pod's flows
    /// through it).
    pub fn connection(&self) -> Option<openflow::Connection> {
        lock(&self.openflow)
            .clone()
            .filter(|c| c.closed_reason().is_none())
    }

    /// Hands the agent its br-int's (new) connection.
    pub fn connected(&self, conn: openflow::Connection) {
        *lock(&self.openflow) = Some(conn);
        self.wake.notify_one();
    }
}

/// Marks what a change set means for the agents: a pod's owner on its node; a node's own
/// owners on it and its remote-node owner everywhere else.
pub fn route(changes: &ChangeSet, agents: &BTreeMap<String, Agent>) {
    use crate::state::Change;
    for change in &changes.changes {
        match change {
            Change::Pod { key, node } => {
                if let Some(a) = agents.get(node) {
                    let key = Arc::new(key.clone());
                    a.mark(Owner::Pod(key.clone()));
                    // Its own policy flows resolve named ports against its model: a changed
                    // pod recomputes them (two owners, empty for a pod no policy selects).
                    for d in crate::policy::Direction::BOTH {
                        a.mark(Owner::Policy(crate::state::PolicyOwner::Target(
                            d,
                            key.clone(),
                        )));
                    }
                }
            }
            Change::NodeAdded(name) | Change::NodeChanged(name) | Change::NodeRemoved(name) => {
                // One name for all agents' owners.
                let shared: Arc<str> = Arc::from(name.as_str());
                for (n, a) in agents {
                    if n == name {
                        a.mark_all();
                    } else {
                        a.mark(Owner::RemoteNode(shared.clone()));
                    }
                }
            }
            Change::Policy { node, owner } => {
                if let Some(a) = agents.get(node) {
                    a.mark(Owner::Policy(owner.clone()));
                }
            }
            Change::Service(key) => {
                // Service flows are node-independent: every node holds them (one key for all).
                let key = Arc::new(key.clone());
                for a in agents.values() {
                    a.mark(Owner::Service(key.clone()));
                }
            }
            Change::Other(..) => {}
        }
    }
}

/// The kind an agent error is counted as (`switchyard_errors_total{kind}`).
fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::OpenFlow { .. } => "openflow",
        Error::Ovsdb { .. } | Error::OvsdbLost { .. } => "ovsdb",
        _ => "agent",
    }
}

/// Why `e` means another controller has taken the switch over, if it does: br-int refused a
/// write because this connection is a slave now (another connection became master with a
/// newer generation), refused our generation as stale, or ovsdb-server refused a
/// transaction because the lock it asserts is not ours.
fn fencing(e: &Error) -> Option<String> {
    match e {
        Error::Fenced { reason, .. } => Some(reason.clone()),
        Error::OpenFlow { source, .. } => {
            let name = match &**source {
                openflow::Error::Switch(m) | openflow::Error::BundleFailed { error: m, .. } => {
                    m.name()
                }
                _ => None,
            };
            match name {
                Some("OFPBRC_IS_SLAVE") => {
                    Some("br-int made another controller master: this connection is a slave".into())
                }
                Some("OFPRRFC_STALE") => {
                    Some("br-int has seen a newer master generation than this term's".into())
                }
                _ => None,
            }
        }
        Error::Ovsdb { source, .. } => match &**source {
            ovsdb::Error::Operation { op, error, .. } if op == "assert" || error == "not owner" => {
                Some(format!(
                    "ovsdb-server refused a transaction: the lock {OVSDB_LOCK:?} is not ours"
                ))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Fills `{node}` and `{internal_ip}` in a per-node target template.
pub fn node_target(template: &str, node: &NodeModel) -> String {
    template
        .replace("{node}", &node.name)
        .replace("{internal_ip}", &node.internal_ip.to_string())
}

/// The node's OVSDB tables the agent replicates: every column but the interfaces'
/// `statistics`, which vswitchd rewrites every 5 s (`other_config:stats-update-interval`)
/// for every port: replicated, they would wake every agent that often for nothing.
fn ovsdb_tables() -> [ovsdb::TableSpec; 6] {
    [
        ovsdb::TableSpec::all("Open_vSwitch"),
        ovsdb::TableSpec::all("Bridge"),
        ovsdb::TableSpec::all("Port"),
        ovsdb::TableSpec::all_but("Interface", &["statistics"]),
        ovsdb::TableSpec::all("Controller"),
        ovsdb::TableSpec::all("Flow_Table"),
    ]
}

struct Worker {
    config: Arc<AgentConfig>,
    state: Arc<dyn StatePort>,
    node: String,
    generation: Option<u64>,
    marks: Arc<Mutex<Marks>>,
    wake: Arc<Notify>,
    openflow: Arc<Mutex<Option<openflow::Connection>>>,
    status: watch::Sender<AgentStatus>,
    installed: watch::Sender<Arc<BTreeMap<ObjectKey, InstalledPod>>>,
    /// What `installed` was last computed from (the attachments, by identity, and the
    /// ofports' version): the same inputs give the same pods, so a wake that changed neither
    /// (a policy or Service event) does not rebuild a map over every pod of the node.
    installed_from: Mutex<Option<(Vec<Arc<PodPort>>, u64)>>,
    ports: watch::Sender<Arc<BTreeMap<String, InterfaceView>>>,
    realised: watch::Sender<Realised>,
}

/// The flow side of one switch: the connection realised against, what it holds.
#[derive(Default)]
struct FlowSide {
    conn: Option<openflow::Connection>,
    desired: Desired,
    installed: Option<Installed>,
    read_at: Option<Instant>,
    pending: Dirty,
    recompute_all: bool,
    /// Owners to compute again because the switch reported their flows changed by others.
    refresh: BTreeSet<Owner>,
    /// Owners whose flows this switch refused (a bundle failed on one of their messages),
    /// with the switch's error: left out until they change or the connection is new.
    refused: BTreeMap<Owner, String>,
    /// Keys the switch reported changed by someone else (and whether the flow is gone).
    tampered: Option<mpsc::UnboundedReceiver<(FlowKey, bool)>>,
    _watcher: Option<AbortOnDrop>,
}

impl FlowSide {
    fn foreign_change(&mut self, node: &str, key: FlowKey, gone: bool, telemetry: &Telemetry) {
        let Some(installed) = self.installed.as_mut() else {
            return;
        };
        if let Some(owner) = self.desired.owner_of(&key) {
            warn!(node = %node, table = key.table_id(), priority = key.priority(), ?owner,
                deleted = gone, "a flow was changed behind the controller's back; restoring it");
            telemetry.drift(true);
        } else if !gone {
            warn!(node = %node, table = key.table_id(), priority = key.priority(),
                "a flow nobody here wants was added behind the controller's back; removing it");
            telemetry.drift(false);
        }
        if let Some(owner) = installed.foreign_change(key, gone, &self.desired, &mut self.pending) {
            self.refresh.insert(owner);
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        // Why the node's OVSDB was last unreachable: a new reason is logged at warn, the
        // same one again (every retry) at debug.
        let mut unreachable: Option<String> = None;
        loop {
            let Some(node) = self.state.snapshot().node(&self.node).cloned() else {
                return;
            };
            let result = match &self.config.switch_db {
                SwitchDb::Simulated => self.serve(None).await,
                SwitchDb::Ovsdb(template) | SwitchDb::OvsdbTls(template, _) => {
                    let target = node_target(template, &node);
                    let mut options = ovsdb::ReplicaOptions {
                        lock: Some(OVSDB_LOCK.to_owned()),
                        // vswitchd rewrites it every 5 s (`sec_since_connect`): read for
                        // br-int's connection errors only, it must not make the agent plan
                        // the node's OVSDB side again (work that grows with its ports).
                        volatile: vec![("Controller".into(), "status".into())],
                        ..Default::default()
                    };
                    if let SwitchDb::OvsdbTls(_, tls) = &self.config.switch_db {
                        options.client.tls = Some(ovsdb::TlsClient {
                            config: tls.clone(),
                            server_name: self.node.to_string(),
                        });
                    }
                    match ovsdb::Replica::start_with(
                        &target,
                        ovsdb::vswitch::DATABASE,
                        ovsdb_tables(),
                        options,
                    )
                    .await
                    {
                        Ok(replica) => {
                            info!(node = %self.node, %target, "OVSDB connected");
                            unreachable = None;
                            backoff = Duration::from_millis(100);
                            self.status.send_modify(|s| {
                                s.ovsdb_connected = true;
                                s.ovsdb_connected_since = Some(SystemTime::now());
                            });
                            self.serve(Some(&replica)).await
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            if unreachable.as_deref() == Some(reason.as_str()) {
                                debug!(node = %self.node, %target, %reason,
                                    "node unreachable: OVSDB still not reachable; retrying");
                            } else {
                                warn!(node = %self.node, %target, %reason,
                                    "node unreachable: cannot reach its OVSDB; retrying with \
                                     backoff (logged again when the reason changes)");
                                unreachable = Some(reason);
                            }
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e @ Error::Fenced { .. }) = result {
                // Another controller writes this node now: stop here for the rest of the
                // term (the connections close; a new term starts a new agent).
                warn!(node = %self.node, "{e}");
                self.config.telemetry.error("fenced");
                self.status.send_modify(|s| {
                    s.ready = false;
                    s.ovsdb_connected = false;
                    s.ovsdb_connected_since = None;
                    s.openflow_connected_since = None;
                    s.fenced = true;
                    s.last_error = Some((Instant::now(), e.to_string()));
                });
                if let Some(conn) = lock(&self.openflow).take() {
                    conn.close();
                }
                return;
            }
            if let Err(e) = result {
                warn!(node = %self.node, "node agent: {e}; starting over");
                self.config.telemetry.error(error_kind(&e));
                self.status
                    .send_modify(|s| s.last_error = Some((Instant::now(), e.to_string())));
            }
            self.status.send_modify(|s| {
                s.ready = false;
                s.ovsdb_connected = false;
                s.ovsdb_connected_since = None;
            });
            // The next connection starts from scratch.
            lock(&self.marks).all = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn take_marks(&self) -> (BTreeSet<Owner>, bool, Option<Instant>) {
        let mut m = lock(&self.marks);
        (
            std::mem::take(&mut m.owners),
            std::mem::take(&mut m.all),
            m.since.take(),
        )
    }

    fn put_back(&self, owners: BTreeSet<Owner>, all: bool, since: Option<Instant>) {
        let mut m = lock(&self.marks);
        m.all |= all;
        if !m.all {
            m.owners.extend(owners);
        }
        m.since = match (m.since, since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    async fn serve(&self, replica: Option<&ovsdb::Replica>) -> Result<(), Error> {
        let node = self.node.as_str();
        // Replica changes wake the agent: an ofport appearing is a reason to recompute.
        let _forward = replica.and_then(|r| r.changes()).map(|mut rx| {
            let wake = self.wake.clone();
            AbortOnDrop(tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    wake.notify_one();
                }
            }))
        });
        // The lock's state wakes it too: a stolen lock stops the agent at once.
        let _lock_watch = replica.map(|r| {
            let (wake, mut status) = (self.wake.clone(), r.status());
            AbortOnDrop(tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    wake.notify_one();
                }
            }))
        });
        if let Some(r) = replica {
            self.check_lock(r)?;
            let restored = self
                .state
                .restore_attachments(node, switch_config::pod_ports(&r.snapshot()));
            let _ = restored.await;
        }
        let mut ofports: HashMap<String, u32> = HashMap::new();
        // Moves whenever `ofports` does (see `installed_from`, which counts from here).
        let mut ofports_version = 0u64;
        *lock(&self.installed_from) = None;
        let mut next_sim_ofport = 3u32;
        let mut flows = FlowSide {
            recompute_all: true,
            ..FlowSide::default()
        };
        let mut reported_errors = BTreeMap::new();
        let mut reported_controller_errors = BTreeMap::new();
        let mut controller_errors_at = u64::MAX;
        // What the last OVSDB plan was made from: when none of it changed (a policy or
        // label change touches no row), the plan, the replica copy and the port views are
        // skipped, so such a wake costs nothing that grows with the node's pods.
        let mut planned: Option<PlanInputs> = None;
        loop {
            if let Some(r) = replica {
                self.check_lock(r)?;
            }
            // Marks first, then the snapshot: the controller publishes a snapshot before it
            // marks what changed, so every mark taken here is for a change this snapshot
            // holds. (The other order could take a mark whose change the snapshot lacks: the
            // owner computed without it, nothing sent, and its latency never recorded when
            // the next wake sent its flows.)
            let (mut owners, all, marked_at) = self.take_marks();
            let snap = self.state.snapshot();
            let Some(this) = snap.node(node).cloned() else {
                return Ok(());
            };
            let features = if all || flows.recompute_all {
                vec!["all"]
            } else {
                let mut f: Vec<&'static str> = owners.iter().map(telemetry::feature_of).collect();
                f.sort_unstable();
                f.dedup();
                f
            };
            flows.recompute_all |= all;
            if flows.recompute_all {
                // Everything is computed again anyway: the marks say nothing more. (Kept,
                // they would be put back on every wake until br-int connects: at cold start
                // a thousand agents each re-inserting a thousand remote nodes per node added.)
                owners.clear();
            }
            let attachments: Vec<Arc<PodPort>> = snap.attachments_on(node).cloned().collect();

            // OVSDB: the node's rows, then the ofports the pod ports have or will have.
            // The transaction, and whether it only takes pod ports away (then it goes first).
            let mut node_txn: Option<(SwitchConfig, ovsdb::Transaction, bool)> = None;
            let live = lock(&self.openflow)
                .as_ref()
                .is_some_and(|c| c.closed_reason().is_none());
            let inputs = replica.map(|r| PlanInputs {
                replica_generation: r.generation(),
                node: this.clone(),
                attachments: attachments.clone(),
                live,
            });
            let unchanged = inputs.is_some() && inputs == planned;
            // br-int's own view of its connection to this controller: vswitchd's
            // `status:last_error` while it is not connected (refused, no route). A volatile
            // column: looked at whenever anything changed, the plan below only when more did.
            if let Some(r) = replica
                && r.volatile_generation() != controller_errors_at
            {
                controller_errors_at = r.volatile_generation();
                let errors = r.read(switch_config::controller_errors);
                if errors != reported_controller_errors {
                    for (target, error) in errors
                        .iter()
                        .filter(|(t, e)| reported_controller_errors.get(*t) != Some(*e))
                    {
                        warn!(node = %node, %target, %error,
                            "node unreachable: br-int cannot connect to the controller \
                             (ovs-vsctl list Controller on the node)");
                    }
                    reported_controller_errors = errors;
                }
            }
            // `None`: the same port numbers as before.
            let new_ofports: Option<HashMap<String, u32>> = match replica {
                // Same rows, node, attachments and connection as the last plan: the same
                // (empty) transaction and the same port numbers.
                Some(_) if unchanged => None,
                Some(replica) => {
                    self.status.send_modify(|s| s.ovsdb_plans += 1);
                    let snapshot = replica.snapshot();
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
                    let interfaces = self.publish_ports(&snapshot);
                    let desired = SwitchConfig {
                        datapath_type: self.config.datapath_type.clone(),
                        datapath_id: format!("{:016x}", switch_config::datapath_id(node)),
                        controller_targets: node_target(&self.config.openflow_target, &this)
                            .split(',')
                            .map(|t| t.trim().to_owned())
                            .filter(|t| !t.is_empty())
                            .collect(),
                        encap: self.config.encap,
                        gateway_mac: features::gateway_mac(&this),
                        pod_cidr: this.pod_cidr,
                        pod_ports: attachments.iter().map(|a| (**a).clone()).collect(),
                    };
                    // vswitchd started with flow-restore-wait=true connects to no controller
                    // until the key is cleared (ovs-vswitchd.conf.db(5)); OVS expects the
                    // flows to be restored through the local management socket meanwhile,
                    // which a central controller cannot reach. So: with no live br-int
                    // connection, clear it at once; br-int (fail_mode=secure) drops
                    // everything until the whole pipeline arrives in one bundle.
                    if !live && let Some(txn) = switch_config::clear_flow_restore_wait(&snapshot) {
                        info!(node = %node,
                            "vswitchd waits with flow-restore-wait, which keeps it from connecting: clearing the key; the pipeline goes in one bundle when br-int connects");
                        self.put_back(owners, false, marked_at);
                        self.transact(replica, txn).await?;
                        continue;
                    }
                    let txn = switch_config::plan(&snapshot, &desired);
                    if txn.is_empty() {
                        // Nothing to do for these inputs: the next wake with the same ones
                        // skips all of this. (After a transaction the replica moves on, so
                        // the plan is made again to confirm it.)
                        planned = inputs;
                    } else {
                        let first = switch_config::only_removes_pod_ports(&snapshot, &attachments);
                        node_txn = Some((desired, txn, first));
                    }
                    // A new pod port's number is known before vswitchd adds it (its
                    // ofport_request), so its flows go in together with the port below.
                    Some(switch_config::effective_ofports(
                        &interfaces,
                        this.pod_cidr,
                        &attachments,
                    ))
                }
                None => {
                    let mut sim: HashMap<String, u32> = HashMap::new();
                    for a in &attachments {
                        let p = ofports.get(&a.iface).copied().unwrap_or_else(|| {
                            next_sim_ofport += 1;
                            next_sim_ofport
                        });
                        sim.insert(a.iface.clone(), p);
                    }
                    Some(sim)
                }
            };
            // A pod whose port number changed (vswitchd restarted and renumbered, refused the
            // requested number, the port just appeared or went away) needs its flows
            // recomputed.
            if let Some(new_ofports) = new_ofports
                && new_ofports != ofports
            {
                for a in &attachments {
                    if ofports.get(&a.iface) != new_ofports.get(&a.iface) {
                        owners.insert(Owner::Pod(Arc::new(a.pod.clone())));
                    }
                }
                ofports = new_ofports;
                ofports_version += 1;
            }

            // The flows' bundle first, then the OVSDB transaction. vswitchd's main loop
            // serves OpenFlow and reconfigures ports one after the other, and adding or
            // removing a port keeps it busy for tens of milliseconds (more, the more ports
            // it has): a bundle that arrives after the port change waits for all of it. The
            // port's number is known in advance (ofport_request), so nothing in the flows
            // waits for the port. A transaction that only takes pod ports away (DEL, GC)
            // goes first instead: a DEL waits for its port to be out of OVSDB, not for the
            // bundle, and the pod's flows going a moment after its port harms nobody.
            let sent_txn = node_txn.is_some();
            let (txn_first, txn_last) = match node_txn {
                Some((desired, txn, true)) => (Some((desired, txn)), None),
                other => (None, other.map(|(desired, txn, _)| (desired, txn))),
            };
            if let (Some((desired, txn)), Some(replica)) = (txn_first, replica) {
                self.transact_and_wait(replica, &desired, txn, || {})
                    .await?;
                // A DEL waits only for its port to be out of OVSDB: say so at once.
                replica.read(|snapshot| self.publish_ports(snapshot));
            }
            let conn = lock(&self.openflow).clone();
            let ctx = NodeContext {
                node: &this,
                state: &snap,
                ofports: &ofports,
            };
            let flow_result = match &conn {
                None => {
                    // Nothing to realise against: keep the marks for when br-int connects.
                    self.put_back(owners, false, marked_at);
                    None
                }
                Some(conn) => Some(
                    self.realise(&mut flows, conn, &ctx, owners, replica, snap.version)
                        .await,
                ),
            };
            if let (Some((desired, txn)), Some(replica)) = (txn_last, replica) {
                // The pods are installed once their flows are in and their ports committed
                // to OVSDB: a CNI ADD need not wait for the replica to show the commit.
                let flows_in = matches!(flow_result, Some(Ok(_)));
                let committed = || {
                    if flows_in {
                        self.publish_installed(&attachments, &ofports, ofports_version);
                    }
                };
                self.transact_and_wait(replica, &desired, txn, committed)
                    .await?;
                // A DEL waits only for its port to be out of OVSDB: say so at once.
                replica.read(|snapshot| self.publish_ports(snapshot));
            }
            // Another controller has the switch: stop here (see `fencing`).
            if let Some(Err(e)) = &flow_result
                && let Some(reason) = fencing(e)
            {
                return Err(Error::Fenced {
                    node: node.to_owned(),
                    reason,
                });
            }
            match (flow_result, conn) {
                (Some(Ok(_)), _) => {
                    self.publish_installed(&attachments, &ofports, ofports_version);
                    // Observed whether or not this wake sent anything: marks whose flows an
                    // earlier wake already sent (it read a snapshot that held their change
                    // before the controller marked it, and sent the pod's flows because its
                    // port number appeared) are realised now, not never.
                    if let Some(at) = marked_at {
                        self.config
                            .telemetry
                            .realisation_latency(&features, at.elapsed());
                    }
                    self.status.send_modify(|s| {
                        s.ready = true;
                        s.flows_desired = flows.desired.flow_count();
                        s.groups_desired = flows.desired.group_count();
                        s.meters_desired = flows.desired.meter_count();
                        s.flows_installed =
                            flows.installed.as_ref().map_or(0, Installed::flow_count);
                    });
                    self.realised.send_modify(|r| r.version = snap.version);
                }
                (Some(Err(e)), Some(conn)) => {
                    warn!(node = %node, "OpenFlow: {e}; waiting for br-int to reconnect");
                    self.config.telemetry.error(error_kind(&e));
                    self.status.send_modify(|s| {
                        s.ready = false;
                        s.openflow_connected_since = None;
                        s.last_error = Some((Instant::now(), e.to_string()));
                    });
                    let mut slot = lock(&self.openflow);
                    if slot.as_ref().is_some_and(|c| c.same_as(&conn)) {
                        *slot = None;
                    }
                    flows = FlowSide {
                        recompute_all: true,
                        ..FlowSide::default()
                    };
                }
                _ => {}
            }
            // Waiting for the transaction to show in the replica may have taken a wake-up
            // meant for new marks: look again before sleeping.
            if sent_txn {
                continue;
            }
            // An idle agent must not pin an old version of the state: a thousand agents each
            // holding a different snapshot would keep a thousand versions' worth of
            // copied-on-write map nodes alive.
            drop(snap);
            drop(attachments);
            let reread_in = flows
                .read_at
                .map(|t| REREAD_INTERVAL.saturating_sub(t.elapsed()))
                .unwrap_or(Duration::from_secs(30))
                .max(Duration::from_millis(10));
            let tampered = async {
                match flows.tampered.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                key = tampered => {
                    if let Some((key, gone)) = key {
                        flows.foreign_change(node, key, gone, &self.config.telemetry);
                    }
                }
                _ = tokio::time::sleep(reread_in.min(Duration::from_secs(30))) => {}
            }
            while let Some(Ok((key, gone))) = flows.tampered.as_mut().map(|rx| rx.try_recv()) {
                flows.foreign_change(node, key, gone, &self.config.telemetry);
            }
        }
    }

    async fn transact_and_wait(
        &self,
        replica: &ovsdb::Replica,
        desired: &SwitchConfig,
        txn: ovsdb::Transaction,
        committed: impl FnOnce(),
    ) -> Result<(), Error> {
        let node = self.node.as_str();
        let n = txn.operations().len();
        let sent = txn.to_params(ovsdb::vswitch::DATABASE);
        let started = Instant::now();
        self.send_transaction(replica, txn).await?;
        let took_ms = started.elapsed().as_millis() as u64;
        info!(node = %node, operations = n, took_ms, "OVSDB updated");
        committed();
        // Plan the next step from the replica once it shows our transaction, never from a
        // snapshot that predates it (that would insert the same rows twice).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline
            && replica
                .read(|snapshot| switch_config::plan(snapshot, desired))
                .to_params(ovsdb::vswitch::DATABASE)
                == sent
        {
            let _ = tokio::time::timeout(Duration::from_millis(20), self.wake.notified()).await;
        }
        debug!(node = %node, seen_ms = started.elapsed().as_millis() as u64,
            "OVSDB transaction seen in the replica");
        Ok(())
    }

    /// Sends one transaction to the node's ovsdb-server.
    async fn send_transaction(
        &self,
        replica: &ovsdb::Replica,
        txn: ovsdb::Transaction,
    ) -> Result<(), Error> {
        let node = self.node.as_str();
        self.check_lock(replica)?;
        let client = replica.client().ok_or_else(|| Error::OvsdbLost {
            node: node.to_owned(),
        })?;
        let mut txn = txn;
        txn.assert_lock(OVSDB_LOCK);
        client
            .transact(ovsdb::vswitch::DATABASE, txn)
            .await
            .map_err(|e| Error::Ovsdb {
                node: node.into(),
                source: Box::new(e),
            })
            .map_err(|e| match fencing(&e) {
                Some(reason) => Error::Fenced {
                    node: node.to_owned(),
                    reason,
                },
                None => e,
            })?;
        Ok(())
    }

    /// Asks br-int to make this connection its OpenFlow master with this term's generation
    /// id; any other master becomes a slave, whose writes br-int refuses. A switch that has
    /// seen a newer generation refuses ours (OFPRRFC_STALE): another leader came after us.
    async fn become_master(
        &self,
        conn: &openflow::Connection,
        generation: u64,
    ) -> Result<(), Error> {
        use openflow::message::switch::role;
        let node = self.node.as_str();
        let reply = conn
            .request(&Message::RoleRequest(openflow::Role {
                role: role::MASTER,
                generation_id: generation,
            }))
            .await
            .map_err(|e| Error::OpenFlow {
                node: node.to_owned(),
                source: Box::new(e),
            })?;
        match reply {
            Message::RoleReply(r) if r.role == role::MASTER => {
                info!(node = %node, generation, "br-int: this controller is its OpenFlow master");
                Ok(())
            }
            other => Err(Error::OpenFlow {
                node: node.to_owned(),
                source: Box::new(openflow::Error::Protocol(format!(
                    "asked to be master (generation {generation}), br-int answered {other:?}"
                ))),
            }),
        }
    }

    /// Fails with [`Error::Fenced`] once another client stole the node's OVSDB lock from
    /// this agent (it stays so: `lock_stolen` is sticky).
    fn check_lock(&self, replica: &ovsdb::Replica) -> Result<(), Error> {
        if replica.status().borrow().lock_stolen {
            return Err(Error::Fenced {
                node: self.node.clone(),
                reason: format!(
                    "it stole the OVSDB lock {OVSDB_LOCK:?} on the node's ovsdb-server"
                ),
            });
        }
        Ok(())
    }

    /// Sends one transaction and lets the replica catch up before the next plan.
    async fn transact(
        &self,
        replica: &ovsdb::Replica,
        txn: ovsdb::Transaction,
    ) -> Result<(), Error> {
        self.send_transaction(replica, txn).await?;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.wake.notified()).await;
        Ok(())
    }

    /// Brings the switch to the desired pipeline for the dirty owners (all of them on a new
    /// connection), in one bundle.
    async fn realise(
        &self,
        flows: &mut FlowSide,
        conn: &openflow::Connection,
        ctx: &NodeContext<'_>,
        mut owners: BTreeSet<Owner>,
        replica: Option<&ovsdb::Replica>,
        version: u64,
    ) -> Result<bool, Error> {
        let node = self.node.as_str();
        let of_err = |e: openflow::Error| Error::OpenFlow {
            node: node.to_owned(),
            source: Box::new(e),
        };
        let started = Instant::now();
        if !flows.conn.as_ref().is_some_and(|c| c.same_as(conn)) {
            // A new connection is a new switch: whatever was known of the old one is void.
            info!(node = %node, "br-int connection is new: reading the switch before changing it");
            if self.status.borrow().openflow_connected_since.is_some() || flows.conn.is_some() {
                self.config.telemetry.reconnect(node);
            }
            self.status
                .send_modify(|s| s.openflow_connected_since = Some(SystemTime::now()));
            *flows = FlowSide {
                conn: Some(conn.clone()),
                recompute_all: true,
                ..FlowSide::default()
            };
            if let Some(generation) = self.generation {
                self.become_master(conn, generation).await?;
            }
            ensure_reject_meter(conn, node).await;
            crate::audit::ensure_meter(conn, node, &self.config.audit).await;
            let (tx, rx) = mpsc::unbounded_channel();
            flows.tampered = Some(rx);
            let audit = (self.config.audit.clone(), self.state.clone());
            flows._watcher = watch_foreign_changes(conn, tx, node, audit).await;
        }
        // A bundle the switch refuses is sent again without the owner it blames (a few
        // times at most: a switch refusing everything is an error, not an owner's fault).
        let mut refusals = 0;
        let sent = loop {
            if flows.read_at.is_none_or(|t| t.elapsed() >= REREAD_INTERVAL) {
                flows.installed = None;
            }
            let whole = flows.installed.is_none() || flows.recompute_all;
            // Who the realisation is for, as its event names them: the marked owners and those
            // whose flows someone else changed; nobody's when only foreign flows go.
            let recomputed: Vec<String> = if whole {
                vec!["all".to_owned()]
            } else {
                let all: Vec<&Owner> = owners.iter().chain(flows.refresh.iter()).collect();
                let names = telemetry::owner_names(all.into_iter());
                if names.is_empty() {
                    vec!["foreign flows".to_owned()]
                } else {
                    names
                }
            };
            // Bounds how many whole pipelines are in memory at once (see AgentConfig).
            let _permit = if whole {
                Some(
                    self.config
                        .full_realisations
                        .acquire()
                        .await
                        .map_err(|_| Error::TaskStopped("the realisation limiter"))?,
                )
            } else {
                None
            };
            if flows.installed.is_none() {
                let dumped = conn
                    .dump_flows(FlowStatsRequest::default())
                    .await
                    .map_err(of_err)?;
                let groups = conn.dump_groups().await.map_err(of_err)?;
                flows.installed = Some(Installed::from_switch(dumped, groups));
                flows.read_at = Some(Instant::now());
            }
            if whole {
                // Every owner again: the plan then looks at every key, desired or installed.
                flows.desired.clear();
                let mut dirty = Dirty::everything();
                for owner in features::node_owners(ctx) {
                    // Refused by this switch and unchanged since: still left out.
                    if flows.refused.contains_key(&owner) && !owners.contains(&owner) {
                        continue;
                    }
                    flows.refused.remove(&owner);
                    let parts = self.config.shared.parts(&owner, ctx);
                    let set = flows.desired.set(&owner, parts, &mut dirty);
                    self.left_out(&owner, set);
                }
                flows.pending = dirty;
                flows.recompute_all = false;
                flows.refresh.clear();
            } else {
                let refresh = std::mem::take(&mut flows.refresh);
                for owner in owners.iter().chain(refresh.iter()) {
                    // Changed since the switch refused it: tried again.
                    flows.refused.remove(owner);
                    let parts = self.config.shared.parts(owner, ctx);
                    let set = flows.desired.set(owner, parts, &mut flows.pending);
                    self.left_out(owner, set);
                }
            }
            let installed = flows.installed.as_mut().expect("read above");
            if flows.pending.is_empty() {
                return Ok(false);
            }
            let plan = realise::plan(&flows.desired, installed, &mut flows.pending);
            let sent = !plan.is_empty();
            if sent {
                let n = plan.changes.len();
                let summary = plan.summary();
                let tables = plan.tables();
                let count = |f: fn(&realise::Change) -> bool| {
                    plan.changes.iter().filter(|c| f(c)).count() as u64
                };
                let added = count(|c| matches!(c, realise::Change::AddFlow(_)));
                let removed = count(|c| matches!(c, realise::Change::DeleteFlow(_)));
                let modified = count(|c| matches!(c, realise::Change::ModifyFlow(_)));
                match conn.bundle(plan.messages).await {
                    Ok(()) => {}
                    Err(openflow::Error::BundleFailed {
                        index: Some(i),
                        error,
                    }) if refusals < MAX_REFUSALS_PER_REALISATION
                        && let Some(owner) = plan
                            .changes
                            .get(i)
                            .and_then(|c| flows.desired.owner_of_change(c))
                            .cloned() =>
                    {
                        // Nothing of the bundle was applied: leave the blamed owner out and
                        // realise everything else again, at once.
                        error!(node = %node, owner = %telemetry::owner_name(&owner), %error,
                            "br-int refused this owner's flows: they are left out until it changes (the rest is realised)");
                        self.config.telemetry.error("refused");
                        let why = format!(
                            "br-int refused the flows of {}: {error}",
                            telemetry::owner_name(&owner)
                        );
                        self.status
                            .send_modify(|s| s.last_error = Some((Instant::now(), why)));
                        owners.remove(&owner);
                        flows.refused.insert(owner, error.to_string());
                        flows.recompute_all = true;
                        flows.pending = Dirty::default();
                        refusals += 1;
                        continue;
                    }
                    Err(e) => return Err(of_err(e)),
                }
                let took = started.elapsed();
                info!(node = %node, changes = %summary, ?tables, owners = owners.len(),
                    took_ms = took.as_millis() as u64, "flows realised");
                self.realised.send_modify(|r| r.bundles += 1);
                self.status
                    .send_modify(|s| s.last_realisation = Some((Instant::now(), took, n)));
                self.config.telemetry.realised(RealisationEvent {
                    time: SystemTime::now(),
                    node: node.to_owned(),
                    owners: recomputed,
                    flows_added: added,
                    flows_removed: removed,
                    flows_modified: modified,
                    other_changes: n as u64 - added - removed - modified,
                    duration: took,
                    state_version: version,
                });
            }
            realise::commit(
                &flows.desired,
                installed,
                std::mem::take(&mut flows.pending),
            );
            break sent;
        };
        // The whole pipeline is in: a vswitchd waiting for its flows may forward now.
        if let Some(replica) = replica
            // Read in place: a copy of the replica per bundle grows with the node's ports.
            && let Some(txn) = replica.read(switch_config::clear_flow_restore_wait)
        {
            self.send_transaction(replica, txn).await?;
            info!(node = %node, "flows restored: cleared other_config:flow-restore-wait");
        }
        Ok(sent)
    }

    /// Reports an owner left out of br-int because a part of it does not fit an OpenFlow
    /// message (`realise::Desired::set`): logged at error with the owner and counted as
    /// `switchyard_errors_total{kind="too_long"}`; the rest of the node is realised.
    fn left_out(&self, owner: &Owner, set: Result<(), realise::TooLong>) {
        if let Err(e) = set {
            error!(node = %self.node, owner = %telemetry::owner_name(owner),
                "{e}: this owner's flows and groups are left out of br-int (the rest is realised)");
            self.config.telemetry.error("too_long");
        }
    }

    /// Publishes the node's interfaces as `snapshot` shows them, and returns them.
    fn publish_ports(&self, snapshot: &ovsdb::Snapshot) -> Arc<BTreeMap<String, InterfaceView>> {
        let interfaces = Arc::new(switch_config::interfaces(snapshot));
        self.ports.send_if_modified(|ports| {
            if **ports == *interfaces {
                false
            } else {
                *ports = interfaces.clone();
                true
            }
        });
        interfaces
    }

    fn publish_installed(
        &self,
        attachments: &[Arc<PodPort>],
        ofports: &HashMap<String, u32>,
        ofports_version: u64,
    ) {
        let mut from = lock(&self.installed_from);
        if let Some((last, version)) = &*from
            && *version == ofports_version
            && last.len() == attachments.len()
            && last.iter().zip(attachments).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return;
        }
        *from = Some((attachments.to_vec(), ofports_version));
        drop(from);
        let before = self.installed.borrow().clone();
        let now: BTreeMap<ObjectKey, InstalledPod> = attachments
            .iter()
            .filter_map(|a| {
                let ofport = *ofports.get(&a.iface)?;
                // The same attachment on the same port keeps its time.
                let since = before
                    .get(&a.pod)
                    .filter(|p| {
                        p.container_id == a.container_id && p.iface == a.iface && p.ofport == ofport
                    })
                    .map_or_else(SystemTime::now, |p| p.since);
                Some((
                    a.pod.clone(),
                    InstalledPod {
                        container_id: a.container_id.clone(),
                        iface: a.iface.clone(),
                        ofport,
                        since,
                    },
                ))
            })
            .collect();
        self.installed.send_if_modified(|installed| {
            if **installed == now {
                false
            } else {
                *installed = Arc::new(now);
                true
            }
        });
    }
}

/// Installs (or sets right) the meter that bounds the packet-ins of refused Service
/// connections. Outside the bundles: OVS does not take meter_mod inside one. Modify first,
/// so a meter left by an earlier controller keeps the flows that use it.
async fn ensure_reject_meter(conn: &openflow::Connection, node: &str) {
    use crate::pipeline::{REJECT_METER_BURST, REJECT_METER_ID, REJECT_METER_PPS};
    use openflow::{MeterMod, MeterModCommand};
    let add = MeterMod::drop_above_pps(REJECT_METER_ID, REJECT_METER_PPS, REJECT_METER_BURST);
    let modify = MeterMod {
        command: MeterModCommand::Modify,
        ..add.clone()
    };
    if conn.apply(&[Message::MeterMod(modify)]).await.is_ok() {
        return;
    }
    if let Err(e) = conn.apply(&[Message::MeterMod(add)]).await {
        warn!(node = %node, "cannot install the reject meter ({e}): connections to Services without endpoints time out instead of being refused");
    }
}

/// Answers a packet-in of a connection to a Service without a usable endpoint with a TCP
/// RST or ICMP port unreachable, out of the port the packet came in on.
fn refuse(conn: &openflow::Connection, node: &str, p: &openflow::PacketIn) {
    let Some(in_port) = p
        .match_
        .get(openflow::Field::InPort)
        .map(|f| f.value_u128() as u32)
    else {
        return;
    };
    let Some(reply) = crate::reject::refusal(&p.data) else {
        return;
    };
    let out = openflow::PacketOut::new(reply, vec![openflow::Action::output(in_port)]);
    if let Err(e) = conn.send(&Message::PacketOut(out)) {
        debug!(node = %node, "refusal not sent: {e}");
    }
}

/// Watches a connection's asynchronous messages for changes others made to the flow
/// tables: FLOW_REMOVED of our flows, and (where vswitchd supports them) flow monitor
/// updates. Each becomes a key to put right.
async fn watch_foreign_changes(
    conn: &openflow::Connection,
    tx: mpsc::UnboundedSender<(FlowKey, bool)>,
    node: &str,
    (audit, state): (Arc<crate::audit::AuditLog>, Arc<dyn StatePort>),
) -> Option<AbortOnDrop> {
    use openflow::message::flow_monitor::flags as fm;
    use openflow::{FlowMonitorRequest, FlowUpdate, FlowUpdateEvent, MultipartReplyBody};
    let mut events = conn.take_events()?;
    // Without NXFMF_OWN the switch reports this connection's own flow-mods only in the
    // abbreviated form, which is ignored below; everyone else's come in full.
    let request = FlowMonitorRequest::all(1, fm::ADD | fm::DELETE | fm::MODIFY);
    match conn.monitor_flows(request).await {
        Ok(_) => debug!(node = %node, "flow monitor started: foreign flow changes are reported"),
        Err(e) => warn!(node = %node,
            "switch refused a flow monitor ({e}); foreign flow changes are found by FLOW_REMOVED and the periodic re-read only"),
    }
    let node = node.to_owned();
    let conn = conn.clone();
    Some(AbortOnDrop(tokio::spawn(async move {
        // Started by the first audit packet-in: reads the audit meter's drops.
        let mut _audit_meter: Option<AbortOnDrop> = None;
        while let Some(message) = events.recv().await {
            match message {
                // A Service port without endpoints, or a nodePort no Service has.
                Message::PacketIn(p)
                    if matches!(
                        crate::pipeline::CookieCategory::of(p.cookie),
                        Some(
                            crate::pipeline::CookieCategory::Service
                                | crate::pipeline::CookieCategory::ServiceBase
                        )
                    ) =>
                {
                    refuse(&conn, &node, &p);
                }
                Message::PacketIn(p) if crate::audit::is_audit(p.cookie) => {
                    audit.packet_in(&node, p.cookie, &p.data, &state.snapshot());
                    _audit_meter.get_or_insert_with(|| {
                        let poll =
                            crate::audit::poll_meter(conn.clone(), node.clone(), audit.clone());
                        AbortOnDrop(tokio::spawn(poll))
                    });
                }
                Message::FlowRemoved(r) if crate::pipeline::switch_made(r.cookie) => {}
                Message::FlowRemoved(r) => {
                    debug!(node = %node, table = r.table_id, priority = r.priority,
                        cookie = format!("{:#x}", r.cookie), reason = r.reason,
                        "switch reports a flow removed");
                    let key = FlowKey::new(r.table_id, r.priority, &r.match_);
                    let _ = tx.send((key, true));
                }
                Message::MultipartReply(reply) => {
                    let MultipartReplyBody::FlowMonitor(updates) = reply.body else {
                        continue;
                    };
                    for update in updates {
                        let FlowUpdate::Full(u) = update else {
                            continue;
                        };
                        if crate::pipeline::switch_made(u.cookie) {
                            continue;
                        }
                        let gone = u.event == FlowUpdateEvent::Deleted;
                        let key = FlowKey::new(u.table_id, u.priority, &u.match_);
                        let _ = tx.send((key, gone));
                    }
                }
                _ => {}
            }
        }
    })))
}
