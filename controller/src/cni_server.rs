//! The CNI server: the controller's end of the pod-attach protocol that `switchyard-cni`
//! speaks (one JSON line each way, over a unix socket or TCP).
//!
//! Owns: reading and answering requests. ADD asks the state task for the pod's address and
//! attachment and answers once the pod's node agent reports its flows installed; DEL
//! removes the attachment and waits (briefly) for the flows to go; CHECK and STATUS read
//! the state snapshot and the agents' status. Decisions are the state's; this module only
//! carries them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use switchyard_cni::api::{ErrorReply, PodNetwork, PodRef, Reply, Request, Route};
use switchyard_target::Target;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use crate::Error;
use crate::controller::{Shared, lock};
use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::encap_overhead;
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
/// CNI error code (spec): the plugin is not available (STATUS).
pub const CNI_UNAVAILABLE: u32 = 50;

pub(crate) enum CniListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
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
                Ok(CniListener::Unix(
                    tokio::net::UnixListener::bind(&path).map_err(fail)?,
                ))
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
    // The runtime may call us before the watch has delivered the pod: wait for it.
    let mut snapshots = shared.state.subscribe();
    let attached = loop {
        snapshots.borrow_and_update();
        match shared
            .state
            .attach(&key, &req.host_iface, &req.container_id)
            .await
        {
            Ok(a) => break a,
            Err(AttachError::UnknownPod(_)) => {
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
                if installed.borrow_and_update().get(&key) == Some(&req.container_id) {
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
    let Some(node) = shared.state.detach(&key, &req.container_id).await else {
        return Reply::Ok(None);
    };
    info!(pod = %key, "CNI DEL");
    let installed = lock(&shared.agents).get(&node).map(|a| a.installed.clone());
    if let Some(mut installed) = installed {
        // Wait (briefly) until the flows are gone, so a re-ADD never races the removal.
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
    let snap = shared.state.snapshot();
    match snap.attachment(&key) {
        Some(a) if a.container_id == req.container_id => {
            match snap.pod(&key).and_then(|p| snap.node(&p.node)) {
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
