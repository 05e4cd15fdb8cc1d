//! Wiring: the controller's tasks and what connects them.
//!
//! - the **state task** owns the [`NetworkState`]: it takes the source's deltas and the CNI
//!   server's commands, publishes a [`Snapshot`] after each change, starts and stops node
//!   agents as nodes come and go, and marks in each agent the owners a change set touches
//!   (`agent::route`);
//! - one **node agent** per node (`agent`);
//! - the **OpenFlow listener** hands each br-int connection to its node's agent;
//! - the **CNI server** (`cni_server`);
//! - the **admin API** and the **metrics endpoint** (`admin`), readers of the snapshots,
//!   the agents' status and the agents' br-int connections.
//!
//! State is rebuilt after a restart from the two places that outlive the process: the
//! Kubernetes objects and each node's OVSDB (pod ports carry their address in external_ids).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Error;
use crate::agent::{self, Agent, AgentConfig, StatePort, SwitchDb};
use crate::cni_server::{self, CniListener};
use crate::leader::Leadership;
use crate::pipeline::Encap;
use crate::source::{Delta, ObjectKey, Source};
use crate::state::{
    AttachError, AttachRules, Attached, Change, ChangeSet, Detached, NetworkState, Snapshot,
};
use crate::switch_config::{self, PodPort};

pub use crate::cni_server::{
    CNI_BAD_REQUEST, CNI_CHECK_FAILED, CNI_FORBIDDEN, CNI_INVALID_POD, CNI_NO_ADDRESS,
    CNI_NO_INTERFACE, CNI_NOT_READY, CNI_POD_RUNNING, CNI_TRY_AGAIN, CNI_UNAVAILABLE,
    CNI_UNKNOWN_NODE, CNI_UNKNOWN_POD,
};

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
    /// Where the admin API listens.
    pub admin: crate::admin::AdminConfig,
    /// Where the metrics endpoint listens.
    pub metrics: crate::admin::metrics::MetricsConfig,
    /// Allow plaintext TCP listeners beyond loopback (`--insecure-listen`; see `listen`).
    pub insecure_listen: bool,
    /// The controller's TLS identity on the CNI listener (`--cni-tls-*`): needed by an
    /// `ssl:` `--cni-listen`; the CA signs the nodes' CNI client certificates.
    pub cni_tls: Option<switchyard_tls::TlsFiles>,
    /// A uid besides 0 (and the controller's own) that may use a unix `--cni-listen`
    /// socket (`--cni-socket-uid`); the socket file is then owned by it.
    pub cni_socket_uid: Option<u32>,
    /// The controller's TLS identity on the switch channels (`--switch-tls-*`): needed by
    /// a `pssl:` OpenFlow listener and an `ssl:` OVSDB template.
    pub switch_tls: Option<switchyard_tls::TlsFiles>,
    /// NetworkPolicy audit logging (`--policy-audit*`).
    pub audit: crate::audit::AuditConfig,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) source: Source,
    pub(crate) state: StateHandle,
    pub(crate) agents: Arc<Mutex<BTreeMap<String, Agent>>>,
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
    pub(crate) audit: Arc<crate::audit::AuditLog>,
    /// Whether this replica leads (the CNI server refuses changes on a standby).
    pub(crate) leadership: watch::Receiver<Leadership>,
    /// The leader's CNI address while this replica is its standby (leader.rs): the CNI
    /// server hands connections on to it.
    pub(crate) leader_cni: watch::Receiver<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Command {
    Attach {
        key: ObjectKey,
        iface: String,
        container_id: String,
        /// `None`: unchecked ([`NetworkState::attach`]).
        rules: Option<AttachRules>,
        reply: oneshot::Sender<Result<Attached, AttachError>>,
    },
    ReleaseUnattached {
        key: ObjectKey,
        done: oneshot::Sender<()>,
    },
    Detach {
        key: ObjectKey,
        container_id: String,
        reply: oneshot::Sender<Option<Detached>>,
    },
    CollectGarbage {
        node: String,
        keep: HashSet<String>,
        reply: oneshot::Sender<Vec<Detached>>,
    },
    Restore {
        node: String,
        ports: Vec<PodPort>,
        done: oneshot::Sender<()>,
    },
}

/// The way into the state task: commands in, snapshots out. Cheap to clone.
#[derive(Clone)]
pub struct StateHandle {
    commands: mpsc::UnboundedSender<Command>,
    snapshots: watch::Receiver<Snapshot>,
}

impl StateHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshots.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshots.clone()
    }

    /// CNI ADD's state part: the pod's address and attachment.
    pub async fn attach(
        &self,
        key: &ObjectKey,
        iface: &str,
        container_id: &str,
    ) -> Result<Attached, AttachError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Attach {
            key: key.clone(),
            iface: iface.to_owned(),
            container_id: container_id.to_owned(),
            rules: None,
            reply,
        });
        rx.await
            .unwrap_or_else(|_| Err(AttachError::UnknownPod(key.clone())))
    }

    /// CNI ADD's state part as the CNI server asks for it: only on the caller's node, and
    /// not over another container's attachment unless `rules` names it
    /// ([`NetworkState::attach_checked`]).
    pub async fn attach_checked(
        &self,
        key: &ObjectKey,
        iface: &str,
        container_id: &str,
        rules: AttachRules,
    ) -> Result<Attached, AttachError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Attach {
            key: key.clone(),
            iface: iface.to_owned(),
            container_id: container_id.to_owned(),
            rules: Some(rules),
            reply,
        });
        rx.await
            .unwrap_or_else(|_| Err(AttachError::UnknownPod(key.clone())))
    }

    /// A failed first ADD gives the pod's address back (if it holds no attachment).
    pub async fn release_unattached(&self, key: &ObjectKey) {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::ReleaseUnattached {
            key: key.clone(),
            done,
        });
        let _ = rx.await;
    }

    /// CNI DEL's state part; what was removed, if anything.
    pub async fn detach(&self, key: &ObjectKey, container_id: &str) -> Option<Detached> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Detach {
            key: key.clone(),
            container_id: container_id.to_owned(),
            reply,
        });
        rx.await.ok().flatten()
    }

    /// CNI GC's state part: detaches every attachment on `node` whose host interface is
    /// not in `keep`; returns what was removed.
    pub async fn collect_garbage(&self, node: &str, keep: HashSet<String>) -> Vec<Detached> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::CollectGarbage {
            node: node.to_owned(),
            keep,
            reply,
        });
        rx.await.unwrap_or_default()
    }
}

impl StatePort for StateHandle {
    fn snapshot(&self) -> Snapshot {
        StateHandle::snapshot(self)
    }

    fn restore_attachments(&self, node: &str, ports: Vec<PodPort>) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Restore {
            node: node.to_owned(),
            ports,
            done,
        });
        rx
    }
}

/// A running controller core (state task and agents), without listeners: what `run`
/// builds on, and what the scale benchmark drives directly.
pub struct Core {
    /// The way into the state.
    pub state: StateHandle,
    /// The node agents, by node name.
    pub agents: Arc<Mutex<BTreeMap<String, Agent>>>,
    /// br-int connections a standby was offered (by datapath id), kept for its agents
    /// should it take the lead: no reconnect, no vswitchd backoff on a takeover.
    parked: Parked,
    task: JoinHandle<()>,
    /// Keeps the leadership of a controller without election open.
    _sole: Option<watch::Sender<Leadership>>,
}

/// Switch connections without an agent yet, by datapath id (see [`Core::accept_switch`]).
type Parked = Arc<Mutex<HashMap<u64, openflow::Connection>>>;

impl Drop for Core {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.agents).clear();
    }
}

impl Core {
    /// Starts the state task on a source's deltas, as the only controller (no election).
    pub fn start(agent_config: AgentConfig, deltas: mpsc::UnboundedReceiver<Vec<Delta>>) -> Core {
        let (sole, leadership) = watch::channel(Leadership::sole());
        let mut core = Core::start_elected(agent_config, deltas, leadership);
        core._sole = Some(sole);
        core
    }

    /// Starts the state task; node agents run only while `leadership` says this replica
    /// leads (the state is kept either way: a standby's caches stay warm).
    pub fn start_elected(
        agent_config: AgentConfig,
        deltas: mpsc::UnboundedReceiver<Vec<Delta>>,
        leadership: watch::Receiver<Leadership>,
    ) -> Core {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshots) = watch::channel(Snapshot::default());
        let state = StateHandle {
            commands,
            snapshots,
        };
        let agents = Arc::new(Mutex::new(BTreeMap::new()));
        let parked: Parked = Arc::default();
        let mut network = NetworkState::new();
        network.set_policy_audit_all(agent_config.audit.config.all_policies);
        network.set_userspace_datapath(agent_config.datapath_type == "netdev");
        let task = tokio::spawn(state_task(
            network,
            deltas,
            command_rx,
            snapshot_tx,
            (agents.clone(), parked.clone()),
            Arc::new(agent_config),
            state.clone(),
            leadership,
        ));
        Core {
            state,
            agents,
            parked,
            task,
            _sole: None,
        }
    }

    /// Hands a switch connection to the agent of the node whose datapath id it carries.
    /// A known node's switch without an agent (this replica is the standby) is parked for
    /// the agent a takeover starts; nothing is ever sent on it meanwhile.
    pub fn accept_switch(&self, conn: openflow::Connection) {
        let dpid = conn.datapath_id();
        let agents = lock(&self.agents);
        if let Some((node, agent)) = agents
            .iter()
            .find(|(n, _)| switch_config::datapath_id(n) == dpid)
        {
            hand_over(node, agent, conn);
            return;
        }
        drop(agents);
        let snapshot = self.state.snapshot();
        let Some(node) = snapshot
            .nodes()
            .find(|n| switch_config::datapath_id(&n.name) == dpid)
        else {
            warn!(
                dpid = format!("{dpid:016x}"),
                "a switch connected whose datapath id is no node's br-int; ignoring it"
            );
            return;
        };
        if !certificate_fits(&node.name, &conn) {
            return;
        }
        let mut parked = lock(&self.parked);
        parked.retain(|_, c| c.closed_reason().is_none());
        if let Some(current) = parked.get(&dpid) {
            refuse_second_switch(&node.name, current, conn);
            return;
        }
        info!(node = %node.name, dpid = format!("{dpid:016x}"), peer = %conn.peer(),
            "br-int connected (standby: kept for a takeover, nothing is sent on it)");
        parked.insert(dpid, conn);
    }

    /// br-int connections kept for a takeover (standby).
    pub fn parked_switches(&self) -> usize {
        let mut parked = lock(&self.parked);
        parked.retain(|_, c| c.closed_reason().is_none());
        parked.len()
    }
}

/// Over TLS the certificate, not the datapath id (derived from the node name, so anyone
/// can present it), says which node this is: a switch whose certificate does not name
/// `node` is refused.
fn certificate_fits(node: &str, conn: &openflow::Connection) -> bool {
    if let Some(cert) = conn.peer_certificate()
        && !switchyard_tls::certificate_names(cert, node)
    {
        warn!(
            node = %node,
            dpid = format!("{:016x}", conn.datapath_id()),
            peer = %conn.peer(),
            "refusing a switch whose TLS certificate does not name node {node}, \
             whose datapath id it presents (a node's certificate needs a DNS \
             subjectAltName equal to the node name)"
        );
        conn.close();
        return false;
    }
    true
}

/// Gives `node`'s agent its br-int connection (unless it has a live one).
fn hand_over(node: &str, agent: &Agent, conn: openflow::Connection) {
    if !certificate_fits(node, &conn) {
        return;
    }
    if let Some(current) = agent.connection() {
        refuse_second_switch(node, &current, conn);
        return;
    }
    info!(node = %node, dpid = format!("{:016x}", conn.datapath_id()), peer = %conn.peer(), "br-int connected");
    agent.connected(conn);
}

/// Hands the parked connection of `node`'s switch, if any, to its new agent.
fn unpark(parked: &Parked, node: &str, agent: &Agent) {
    let conn = lock(parked).remove(&switch_config::datapath_id(node));
    if let Some(conn) = conn.filter(|c| c.closed_reason().is_none()) {
        info!(node = %node, "taking over the br-int connection kept while standby");
        hand_over(node, agent, conn);
    }
}

/// A switch presenting the datapath id of a node whose br-int is connected is refused: the
/// datapath id is derived from the node name, so anyone who reaches the listener could
/// present it, and replacing the connection would hand them the node's flows and cut the
/// real br-int off. A real reconnect (vswitchd restarted) comes after the first connection
/// closed (EOF, or three unanswered echo requests), and is accepted then.
fn refuse_second_switch(node: &str, current: &openflow::Connection, conn: openflow::Connection) {
    warn!(
        node = %node,
        dpid = format!("{:016x}", conn.datapath_id()),
        peer = %conn.peer(),
        connected_peer = %current.peer(),
        "refusing a second OpenFlow connection claiming a connected node's datapath id; \
         the connected br-int keeps the node"
    );
    conn.close();
}

/// Runs the controller until the source ends or a listener fails, as the only controller.
pub async fn run(config: Config, source: Source) -> Result<(), Error> {
    let (_sole, leadership) = watch::channel(Leadership::sole());
    let (_none, leader_cni) = watch::channel(None);
    run_elected(config, source, leadership, leader_cni).await
}

/// Runs the controller; its node agents run only while `leadership` says it leads, and
/// while it does not, CNI connections go on to `leader_cni` when that names the leader.
pub async fn run_elected(
    config: Config,
    source: Source,
    leadership: watch::Receiver<Leadership>,
    leader_cni: watch::Receiver<Option<String>>,
) -> Result<(), Error> {
    let deltas = source.take_deltas().ok_or(Error::SourceEnded)?;
    // The operator's listeners first: a bad address fails the start, before anything else.
    let admin = crate::admin::bind(&config.admin).await?;
    let metrics = crate::admin::metrics::bind(&config.metrics).await?;
    let telemetry = Arc::new(crate::telemetry::Telemetry::default());
    let (listen_tls, ovsdb_tls) = match &config.switch_tls {
        Some(files) => (
            Some(switchyard_tls::server_config(files).map_err(|e| Error::Config(e.to_string()))?),
            Some(switchyard_tls::client_config(files).map_err(|e| Error::Config(e.to_string()))?),
        ),
        None => (None, None),
    };
    let switch_db = match ovsdb_tls {
        Some(tls) if config.ovsdb_template.starts_with("ssl:") => {
            SwitchDb::OvsdbTls(config.ovsdb_template.clone(), tls)
        }
        _ => SwitchDb::Ovsdb(config.ovsdb_template.clone()),
    };
    let audit = Arc::new(crate::audit::AuditLog::new(config.audit.clone()).map_err(Error::Config)?);
    let leading = leadership.clone();
    let core = Core::start_elected(
        AgentConfig {
            telemetry: telemetry.clone(),
            audit: audit.clone(),
            ..AgentConfig::new(
                switch_db,
                config.openflow_target.clone(),
                config.encap,
                config.datapath_type.clone(),
            )
        },
        deltas,
        leadership,
    );
    let mut listener = match listen_tls {
        Some(tls) if config.openflow_listen.starts_with("pssl:") => {
            openflow::Listener::bind_tls(&config.openflow_listen, Default::default(), tls).await
        }
        _ => openflow::Listener::bind(&config.openflow_listen).await,
    }
    .map_err(|e| match e {
        // A target that cannot be listened on is the operator's to change.
        openflow::Error::BadTarget { .. } => Error::Config(format!(
            "--openflow-listen {:?}: {e}",
            config.openflow_listen
        )),
        other => Error::OpenFlowListen {
            target: config.openflow_listen.clone(),
            source: Box::new(other),
        },
    })?;
    info!(listen = %config.openflow_listen, "waiting for br-int connections");
    let cni = CniListener::bind(&config).await?;
    info!(listen = %config.cni_listen, "CNI server ready");
    let shared = Arc::new(Shared {
        config,
        source,
        state: core.state.clone(),
        agents: core.agents.clone(),
        telemetry,
        audit,
        leadership: leading,
        leader_cni,
    });
    let core = Arc::new(core);
    let accept = {
        let core = core.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok(conn) => core.accept_switch(conn),
                    // One peer's failed handshake (the listener backs off by itself when
                    // its socket fails).
                    Err(e) => warn!("OpenFlow listener: {e}"),
                }
            }
        }
    };
    let result = tokio::select! {
        _ = accept => Err(Error::TaskStopped("the OpenFlow listener")),
        _ = cni_server::serve_cni(shared.clone(), cni) => Err(Error::TaskStopped("the CNI server")),
        r = crate::admin::serve(shared.clone(), admin) => r.map_err(Error::from),
        r = crate::admin::metrics::serve(shared.clone(), metrics) => r.map_err(Error::from),
        _ = state_ended(&core) => Err(Error::SourceEnded),
    };
    lock(&shared.agents).clear();
    result
}

async fn state_ended(core: &Core) {
    let mut snapshots = core.state.subscribe();
    while snapshots.changed().await.is_ok() {}
}

// The state task's inputs and outputs, each its own channel: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn state_task(
    mut state: NetworkState,
    mut deltas: mpsc::UnboundedReceiver<Vec<Delta>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    snapshots: watch::Sender<Snapshot>,
    (agents, parked): (Arc<Mutex<BTreeMap<String, Agent>>>, Parked),
    agent_config: Arc<AgentConfig>,
    handle: StateHandle,
    mut leadership: watch::Receiver<Leadership>,
) {
    let port: Arc<dyn StatePort> = Arc::new(handle);
    let mut synced = false;
    // This replica's term: whether it leads, and its switches' master generation.
    let mut term = Leadership {
        leader: false,
        generation: None,
    };
    let mut election_open = true;
    let first = *leadership.borrow_and_update();
    if first.leader {
        term = first;
        set_leading(term, &state, (&agents, &parked), &agent_config, &port);
    }
    loop {
        let changes = tokio::select! {
            // Biased towards leadership: a step-down stops the agents before anything else.
            biased;
            changed = leadership.changed(), if election_open => {
                let now = if changed.is_ok() {
                    *leadership.borrow_and_update()
                } else {
                    // The election ended (the process stops): program nothing more.
                    election_open = false;
                    Leadership { leader: false, generation: None }
                };
                if now != term {
                    term = now;
                    set_leading(term, &state, (&agents, &parked), &agent_config, &port);
                }
                continue;
            }
            batch = deltas.recv() => {
                let Some(mut batch) = batch else {
                    warn!("the source of Kubernetes objects ended");
                    return;
                };
                // Whatever else already arrived goes in the same change set.
                while let Ok(more) = deltas.try_recv() {
                    batch.extend(more);
                }
                let changes = state.apply(batch);
                // The first batch is the source's initial list (Source::take_deltas).
                if !synced {
                    synced = true;
                    agent_config.telemetry.mark_source_synced();
                }
                changes
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Attach { key, iface, container_id, rules, reply } => {
                        let (result, changes) = match &rules {
                            Some(rules) => state.attach_checked(&key, &iface, &container_id, rules),
                            None => state.attach(&key, &iface, &container_id),
                        };
                        // Route first, so the agent is marked before the caller waits on it.
                        publish(&state, &snapshots, &changes, (&agents, &parked), &agent_config, &port, term);
                        let _ = reply.send(result);
                        continue;
                    }
                    Command::ReleaseUnattached { key, done } => {
                        let changes = state.release_unattached(&key);
                        publish(&state, &snapshots, &changes, (&agents, &parked), &agent_config, &port, term);
                        let _ = done.send(());
                        continue;
                    }
                    Command::Detach { key, container_id, reply } => {
                        let (detached, changes) = state.detach(&key, &container_id);
                        publish(&state, &snapshots, &changes, (&agents, &parked), &agent_config, &port, term);
                        let _ = reply.send(detached);
                        continue;
                    }
                    Command::CollectGarbage { node, keep, reply } => {
                        let (detached, changes) = state.collect_garbage(&node, &keep);
                        publish(&state, &snapshots, &changes, (&agents, &parked), &agent_config, &port, term);
                        let _ = reply.send(detached);
                        continue;
                    }
                    Command::Restore { node, ports, done } => {
                        let changes = state.restore_attachments(&node, ports);
                        publish(&state, &snapshots, &changes, (&agents, &parked), &agent_config, &port, term);
                        let _ = done.send(());
                        continue;
                    }
                }
            }
        };
        publish(
            &state,
            &snapshots,
            &changes,
            (&agents, &parked),
            &agent_config,
            &port,
            term,
        );
    }
}

/// Starts every node's agent (this replica took the lead: agents start with everything
/// dirty, read each switch back and realise it), or stops them all (it lost the lead:
/// dropping an agent aborts its task, closing its OVSDB and br-int connections at once).
fn set_leading(
    term: Leadership,
    state: &NetworkState,
    (agents, parked): (&Arc<Mutex<BTreeMap<String, Agent>>>, &Parked),
    agent_config: &Arc<AgentConfig>,
    port: &Arc<dyn StatePort>,
) {
    let leading = term.leader;
    let metrics = &agent_config.telemetry.metrics;
    metrics.leader.set(i64::from(leading));
    metrics.leader_changes.inc();
    let mut agents = lock(agents);
    let snapshot = state.snapshot();
    // A new term (another generation) is new agents: a fenced agent of the last term is
    // replaced, not revived.
    let stopped = std::mem::take(&mut *agents).len();
    if leading {
        info!(
            nodes = snapshot.nodes().count(),
            generation = ?term.generation,
            "leading: starting the node agents"
        );
        for node in snapshot.nodes() {
            let agent = Agent::spawn(
                agent_config.clone(),
                port.clone(),
                node.name.to_string(),
                term.generation,
            );
            unpark(parked, &node.name, &agent);
            agents.insert(node.name.to_string(), agent);
        }
    } else {
        warn!(
            nodes = stopped,
            "not leading: stopping every node agent; this replica programs nothing"
        );
    }
}

/// Publishes the new snapshot, then starts/stops agents and marks what changed.
fn publish(
    state: &NetworkState,
    snapshots: &watch::Sender<Snapshot>,
    changes: &ChangeSet,
    (agents, parked): (&Arc<Mutex<BTreeMap<String, Agent>>>, &Parked),
    agent_config: &Arc<AgentConfig>,
    port: &Arc<dyn StatePort>,
    term: Leadership,
) {
    if changes.is_empty() {
        return;
    }
    snapshots.send_replace(state.snapshot());
    let mut agents = lock(agents);
    for change in &changes.changes {
        match change {
            Change::NodeAdded(name) if !term.leader => {
                info!(node = %name, "new node (standby: no agent)");
            }
            Change::NodeAdded(name) => {
                info!(node = %name, "new node: starting its agent");
                let agent = Agent::spawn(
                    agent_config.clone(),
                    port.clone(),
                    name.clone(),
                    term.generation,
                );
                // Its switch may have connected between the snapshot and this agent.
                unpark(parked, name, &agent);
                agents.insert(name.clone(), agent);
            }
            Change::NodeRemoved(name) => {
                info!(node = %name, "node removed: stopping its agent");
                agents.remove(name);
            }
            _ => {}
        }
    }
    agent::route(changes, &agents);
}

#[cfg(test)]
mod tests {
    use crate::agent::node_target;
    use crate::model::NodeModel;
    use std::net::Ipv4Addr;

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
