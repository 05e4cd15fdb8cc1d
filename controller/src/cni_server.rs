//! The CNI server: the controller's end of the pod-attach protocol that `switchyard-cni`
//! speaks (one JSON line each way, over a unix socket or TCP).
//!
//! Owns: reading and answering requests. ADD asks the state task for the pod's address and
//! attachment and answers once the pod's node agent reports its port in OVSDB and its
//! flows installed (failing at once for a pod the source does not have or holds invalid);
//! DEL removes the attachment and waits (briefly) until the port is out of the node's
//! OVSDB; GC removes every attachment of a node the runtime does not list; CHECK compares
//! the port (the agent's OVSDB replica) and the flows (read back from br-int by cookie)
//! with what the pod should have; STATUS reads the agents' status. Decisions are the
//! state's; this module only carries them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use openflow::FlowStatsRequest;
use switchyard_cni::api::{
    ErrorReply, PodNetwork, PodRef, Reply, Request, Route, ValidAttachment, host_iface_name,
};
use switchyard_target::Target;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use crate::Error;
use crate::controller::{Shared, lock};
use crate::features::{self, NodeContext, Owner};
use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::encap_overhead;
use crate::realise::FlowKey;
use crate::source::{ObjectKey, POD_NETWORK_ANNOTATION};
use crate::state::AttachError;

/// CNI error code: the pod is not (yet) known to the controller.
pub const CNI_UNKNOWN_POD: u32 = 110;
/// CNI error code: no address could be allocated.
pub const CNI_NO_ADDRESS: u32 = 111;
/// CNI error code: the pod's flows were not installed in time.
pub const CNI_NOT_READY: u32 = 112;
/// CNI error code: the request itself is malformed.
pub const CNI_BAD_REQUEST: u32 = 113;
/// CNI error code: CHECK found the pod's port or flows not in place.
pub const CNI_CHECK_FAILED: u32 = 114;
/// CNI error code: the source has the pod but it is invalid (a field names the problem).
pub const CNI_INVALID_POD: u32 = 115;
/// CNI error code: GC for a node the controller does not know.
pub const CNI_UNKNOWN_NODE: u32 = 116;
/// CNI error code (spec): the plugin is not available (STATUS).
pub const CNI_UNAVAILABLE: u32 = 50;

/// Longest a DEL waits for the pod's port to leave the node's OVSDB.
const DEL_PORT_WAIT: Duration = Duration::from_secs(10);

pub(crate) enum CniListener {
    /// The socket file is removed when the listener is dropped (the controller stops).
    Unix(tokio::net::UnixListener, std::path::PathBuf),
    Tcp(tokio::net::TcpListener),
}

impl Drop for CniListener {
    fn drop(&mut self) {
        if let CniListener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl CniListener {
    pub(crate) async fn bind(target: &str) -> Result<CniListener, Error> {
        let fail = |source: std::io::Error| Error::Listen {
            what: "CNI",
            target: target.to_owned(),
            source,
        };
        // The controller listens on what shims connect to, so the spelling is theirs:
        // `unix:PATH` or `tcp:IP:PORT`.
        match Target::parse_connect(target) {
            Ok(Target::Unix(path)) => {
                // A socket file left by a previous controller would make bind fail.
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).map_err(fail)?;
                Ok(CniListener::Unix(listener, path))
            }
            Ok(Target::Tcp(addr)) => Ok(CniListener::Tcp(
                tokio::net::TcpListener::bind(addr.as_str())
                    .await
                    .map_err(fail)?,
            )),
            Ok(other) => Err(Error::Config(format!(
                "--cni-listen {target:?}: {other} is not accepted here: use unix:PATH or tcp:IP:PORT"
            ))),
            Err(error) => Err(Error::Config(format!(
                "--cni-listen {target:?}: {}",
                error.reason
            ))),
        }
    }
}

pub(crate) async fn serve_cni(shared: Arc<Shared>, listener: CniListener) {
    loop {
        match &listener {
            CniListener::Unix(l, _) => match l.accept().await {
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
        Request::Add(pod) => timed(shared, "add", cni_add(shared, pod)).await,
        Request::Del(pod) => timed(shared, "del", cni_del(shared, pod)).await,
        Request::Check(pod) => cni_check(shared, pod).await,
        Request::Status { node } => cni_status(shared, node.as_deref()),
        Request::Gc { node, valid } => cni_gc(shared, &node, valid).await,
    }
}

/// Runs a CNI command and records its latency by result (`ok` or the error code).
async fn timed(
    shared: &Arc<Shared>,
    command: &str,
    run: impl std::future::Future<Output = Reply>,
) -> Reply {
    let started = std::time::Instant::now();
    let reply = run.await;
    let result = match &reply {
        Reply::Ok(_) => "ok".to_owned(),
        Reply::Error(e) => {
            shared.telemetry.error("cni");
            e.code.to_string()
        }
    };
    shared.telemetry.cni(command, &result, started.elapsed());
    reply
}

fn pod_network(shared: &Shared, node: &NodeModel, ip: Ipv4Addr) -> PodNetwork {
    let gw = IpAddr::V4(node.gateway_ip());
    PodNetwork {
        address: IpNet::V4(Ipv4Net::new(ip, node.pod_cidr.prefix_len()).unwrap_or(node.pod_cidr)),
        mac: mac_for(ip).to_string(),
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
    let deadline = tokio::time::Instant::now() + shared.config.cni_timeout;
    // The runtime may call us before the watch has delivered the pod: wait for it, unless
    // the source itself says it has no such pod (then waiting only delays the error).
    let mut snapshots = shared.state.subscribe();
    let mut asked_source = false;
    let attached = loop {
        snapshots.borrow_and_update();
        match shared
            .state
            .attach(&key, &req.host_iface, &req.container_id)
            .await
        {
            Ok(a) => break a,
            Err(AttachError::UnknownPod(_)) => {
                if !asked_source {
                    asked_source = true;
                    match shared.source.has_pod(&key).await {
                        Ok(false) => {
                            return error_reply(
                                CNI_UNKNOWN_POD,
                                "unknown pod",
                                format!(
                                    "pod {key} is not in the controller's source (the cluster file or the API server has no such pod, or the file's version of it is unreadable: see the controller log); check CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME"
                                ),
                            );
                        }
                        // It exists (the state is about to hear of it, or its node is not
                        // valid yet): wait below.
                        Ok(true) => {}
                        Err(e) => warn!(pod = %key, "cannot ask the source for the pod: {e}"),
                    }
                    // The state may have taken the pod while the source was asked.
                    if snapshots.has_changed().unwrap_or(false) {
                        continue;
                    }
                }
                let changed = tokio::time::timeout_at(deadline, snapshots.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    return error_reply(
                        CNI_UNKNOWN_POD,
                        "unknown pod",
                        format!(
                            "pod {key} is not in the cluster state (or its node has no valid Node object) after {:?}",
                            shared.config.cni_timeout
                        ),
                    );
                }
            }
            Err(AttachError::InvalidPod(_, problem)) => {
                return error_reply(
                    CNI_INVALID_POD,
                    "invalid pod",
                    format!("pod {key} is not networked until it is fixed: {problem}"),
                );
            }
            Err(AttachError::Ipam(e)) => {
                return error_reply(CNI_NO_ADDRESS, "no address", e.to_string());
            }
        }
    };
    let (node, ip) = (attached.node.clone(), attached.ip);
    info!(pod = %key, node = %node.name, %ip, iface = %req.host_iface, "CNI ADD");
    let installed = lock(&shared.agents)
        .get(&*node.name)
        .map(|a| a.installed.clone());
    let ready = match installed {
        Some(mut installed) => tokio::time::timeout_at(deadline, async {
            loop {
                if installed
                    .borrow_and_update()
                    .get(&key)
                    .is_some_and(|p| p.container_id == req.container_id)
                {
                    return true;
                }
                if installed.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false),
        None => false,
    };
    if !ready {
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
        "ip": ip.to_string(), "mac": mac_for(ip).to_string(), "node": &*node.name,
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
    // A DEL for an older sandbox must not tear down the current one.
    let Some(detached) = shared.state.detach(&key, &req.container_id).await else {
        return Reply::Ok(None);
    };
    info!(pod = %detached.port.pod, iface = %detached.port.iface, "CNI DEL");
    wait_ports_gone(
        shared,
        &detached.node,
        std::slice::from_ref(&detached.port.iface),
    )
    .await;
    Reply::Ok(None)
}

/// Waits (at most [`DEL_PORT_WAIT`]) until none of `ifaces` is in the node's OVSDB any more:
/// then a re-ADD of the pod cannot meet its old port. The pod's flows go in the same pass
/// of the agent, but nobody needs to wait for them: a new attachment of the pod replaces
/// them (same owner), and without one nothing sends to the port. An agent whose OVSDB is
/// not connected removes the port when it reconnects, so waiting for it is pointless.
async fn wait_ports_gone(shared: &Arc<Shared>, node: &str, ifaces: &[String]) {
    let watches = lock(&shared.agents)
        .get(node)
        .map(|a| (a.ports.clone(), a.status.clone()));
    let Some((mut ports, status)) = watches else {
        return;
    };
    let _ = tokio::time::timeout(DEL_PORT_WAIT, async {
        loop {
            if !status.borrow().ovsdb_connected {
                return;
            }
            {
                let now = ports.borrow_and_update();
                if ifaces.iter().all(|i| !now.contains_key(i)) {
                    return;
                }
            }
            if ports.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

async fn cni_gc(shared: &Arc<Shared>, node: &str, valid: Vec<ValidAttachment>) -> Reply {
    if !lock(&shared.agents).contains_key(node) {
        return error_reply(
            CNI_UNKNOWN_NODE,
            "unknown node",
            format!(
                "GC for node {node:?}, which has no valid Node object here; set \"nodeName\" in the plugin's configuration if the host name is not the node's name"
            ),
        );
    }
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| host_iface_name(&a.container_id, &a.ifname))
        .collect();
    let detached = shared.state.collect_garbage(node, keep).await;
    if !detached.is_empty() {
        let pods: Vec<String> = detached.iter().map(|d| d.port.pod.to_string()).collect();
        info!(node = %node, count = detached.len(), ?pods,
            "CNI GC: removed attachments the runtime no longer lists");
        let ifaces: Vec<String> = detached.iter().map(|d| d.port.iface.clone()).collect();
        wait_ports_gone(shared, node, &ifaces).await;
    }
    Reply::Ok(None)
}

fn check_failed(key: &ObjectKey, what: String) -> Reply {
    error_reply(
        CNI_CHECK_FAILED,
        "pod network not in place",
        format!("{key}: {what}"),
    )
}

async fn cni_check(shared: &Arc<Shared>, req: PodRef) -> Reply {
    let key = ObjectKey::new(&req.namespace, &req.pod);
    let snap = shared.state.snapshot();
    let a = match snap.attachment(&key) {
        Some(a) if a.container_id == req.container_id => a.clone(),
        Some(a) => {
            return check_failed(
                &key,
                format!(
                    "attached for container {}, not {}",
                    a.container_id, req.container_id
                ),
            );
        }
        None => return check_failed(&key, "the controller holds no attachment for it".into()),
    };
    let Some(node) = snap.pod(&key).and_then(|p| snap.node(&p.node)).cloned() else {
        return error_reply(
            CNI_UNKNOWN_POD,
            "unknown pod",
            format!("{key} is not in the cluster state"),
        );
    };
    let agent = {
        let agents = lock(&shared.agents);
        agents
            .get(&*node.name)
            .map(|a| (a.ports.clone(), a.installed.clone(), a.connection()))
    };
    let Some((ports, installed, conn)) = agent else {
        return check_failed(&key, format!("node {} has no agent", node.name));
    };
    let view = ports.borrow().get(&a.iface).cloned();
    match view {
        None => {
            return check_failed(
                &key,
                format!("its port {} is not in node {}'s OVSDB", a.iface, node.name),
            );
        }
        Some(v) if v.ofport.is_none_or(|p| p <= 0) => {
            return check_failed(
                &key,
                format!(
                    "vswitchd has not added its port {} to br-int ({})",
                    a.iface,
                    v.error.as_deref().unwrap_or("no ofport yet")
                ),
            );
        }
        Some(v) if !v.has_device => {
            return check_failed(
                &key,
                format!(
                    "vswitchd has its port {} but no device under it: the host end of the pod's veth is gone",
                    a.iface
                ),
            );
        }
        Some(_) => {}
    }
    let Some(ofport) = installed
        .borrow()
        .get(&key)
        .filter(|p| p.container_id == req.container_id)
        .map(|p| p.ofport)
    else {
        return check_failed(&key, "its flows are not installed yet".into());
    };
    let Some(conn) = conn else {
        return check_failed(
            &key,
            format!("node {}'s br-int is not connected", node.name),
        );
    };
    // The flows the pod should have, against what br-int holds under their cookies.
    let ofports = HashMap::from([(a.iface.clone(), ofport)]);
    let ctx = NodeContext {
        node: &node,
        state: &snap,
        ofports: &ofports,
    };
    let want = features::owner_flows(&Owner::Pod(Arc::new(key.clone())), &ctx);
    let cookies: BTreeSet<u64> = want.iter().map(|f| f.cookie).collect();
    let mut have = HashMap::new();
    for cookie in cookies {
        let filter = FlowStatsRequest {
            cookie,
            cookie_mask: u64::MAX,
            ..FlowStatsRequest::default()
        };
        match conn.dump_flows(filter).await {
            Ok(flows) => {
                for f in flows {
                    have.insert(FlowKey::new(f.table_id, f.priority, &f.match_), f);
                }
            }
            Err(e) => return check_failed(&key, format!("cannot read br-int's flows: {e}")),
        }
    }
    let missing: Vec<String> = want
        .iter()
        .filter(|f| {
            have.get(&FlowKey::new(f.table.id(), f.priority, &f.match_))
                .is_none_or(|h| h.instructions != f.instructions || h.cookie != f.cookie)
        })
        .map(|f| format!("table={} priority={}", f.table.name(), f.priority))
        .collect();
    if !missing.is_empty() {
        return check_failed(
            &key,
            format!(
                "{} of its {} flows are missing or different on br-int: {}",
                missing.len(),
                want.len(),
                missing.join(", ")
            ),
        );
    }
    Reply::Ok(Some(pod_network(shared, &node, a.ip)))
}

fn cni_status(shared: &Arc<Shared>, node: Option<&str>) -> Reply {
    let agents = lock(&shared.agents);
    if let Some(n) = node
        && !agents.contains_key(n)
    {
        return error_reply(
            CNI_UNAVAILABLE,
            "unknown node",
            format!("no valid Node object named {n}"),
        );
    }
    let not_ready: BTreeSet<&String> = agents
        .iter()
        .filter(|(n, a)| node.is_none_or(|want| want == n.as_str()) && !a.status.borrow().ready)
        .map(|(n, _)| n)
        .collect();
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
