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
use tracing::{debug, info, warn};

use crate::Error;
use crate::controller::{Shared, lock};
use crate::features::{self, NodeContext, Owner};
use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::encap_overhead;
use crate::realise::FlowKey;
use crate::source::{ObjectKey, POD_NETWORK_ANNOTATION};
use crate::state::{AttachError, AttachRules};

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
/// CNI error code: the caller may not act for that node (its certificate names another
/// node, or its uid may not use the unix socket).
pub const CNI_FORBIDDEN: u32 = 117;
/// CNI error code: the pod is attached for another container that is still running.
pub const CNI_POD_RUNNING: u32 = 118;
/// CNI error code: vswitchd cannot add the host interface (it does not exist).
pub const CNI_NO_INTERFACE: u32 = 119;
/// CNI error code (spec): try again later (a transient condition).
pub const CNI_TRY_AGAIN: u32 = 11;
/// CNI error code (spec): the plugin is not available (STATUS).
pub const CNI_UNAVAILABLE: u32 = 50;

/// Longest a CHECK waits for a just-attached pod's port to show in the node's OVSDB with
/// the number vswitchd gave it.
const CHECK_SETTLE: Duration = Duration::from_secs(2);
/// Longest a DEL waits for the pod's port to leave the node's OVSDB.
const DEL_PORT_WAIT: Duration = Duration::from_secs(10);

pub(crate) enum CniListener {
    /// The socket file is removed when the listener is dropped (the controller stops).
    Unix {
        listener: tokio::net::UnixListener,
        path: std::path::PathBuf,
        /// Peer uids allowed besides 0.
        uids: Vec<u32>,
    },
    /// Plaintext TCP: loopback, or beyond it with `--insecure-listen` (listen.rs).
    Tcp(tokio::net::TcpListener),
    /// Mutual TLS: each caller is the node its certificate names.
    Tls(tokio::net::TcpListener, switchyard_tls::TlsAcceptor),
}

impl Drop for CniListener {
    fn drop(&mut self) {
        if let CniListener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Who is asking, as its connection proves it.
#[derive(Clone, Debug)]
enum Caller {
    /// A process on the controller's host allowed on the unix socket, or a plaintext TCP
    /// peer (loopback, or `--insecure-listen`): trusted for every node.
    Trusted,
    /// A TLS peer with this certificate (verified against `--cni-tls-ca`): it may act for
    /// the node the certificate names only.
    Certified(switchyard_tls::rustls_pki_types::CertificateDer<'static>),
    /// Refused before any request is served (a uid not allowed on the unix socket).
    Refused(String),
}

impl CniListener {
    pub(crate) async fn bind(config: &crate::controller::Config) -> Result<CniListener, Error> {
        let target = config.cni_listen.as_str();
        let fail = |source: std::io::Error| Error::Listen {
            what: "CNI",
            target: target.to_owned(),
            source,
        };
        // The controller listens on what shims connect to, so the spelling is theirs:
        // `unix:PATH`, `tcp:IP:PORT` or `ssl:IP:PORT`.
        match Target::parse_connect(target) {
            Ok(Target::Unix(path)) => {
                use std::os::unix::fs::PermissionsExt;
                // A socket file left by a previous controller would make bind fail.
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).map_err(fail)?;
                // Only its owner (and root) may connect; SO_PEERCRED is checked anyway.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(fail)?;
                if let Some(uid) = config.cni_socket_uid {
                    std::os::unix::fs::chown(&path, Some(uid), None).map_err(fail)?;
                }
                let own = nix::unistd::geteuid().as_raw();
                let uids = [Some(own), config.cni_socket_uid]
                    .into_iter()
                    .flatten()
                    .filter(|u| *u != 0)
                    .collect();
                Ok(CniListener::Unix {
                    listener,
                    path,
                    uids,
                })
            }
            Ok(Target::Tcp(addr)) => Ok(CniListener::Tcp(
                tokio::net::TcpListener::bind(addr.as_str())
                    .await
                    .map_err(fail)?,
            )),
            Ok(Target::Ssl(addr)) => {
                let Some(files) = &config.cni_tls else {
                    return Err(Error::Config(format!(
                        "--cni-listen {target:?} is TLS: give --cni-tls-ca, --cni-tls-cert and --cni-tls-key"
                    )));
                };
                let tls = switchyard_tls::server_config(files)
                    .map_err(|e| Error::Config(format!("--cni-tls-*: {e}")))?;
                Ok(CniListener::Tls(
                    tokio::net::TcpListener::bind(addr.as_str())
                        .await
                        .map_err(fail)?,
                    switchyard_tls::TlsAcceptor::from(tls),
                ))
            }
            Ok(other) => Err(Error::Config(format!(
                "--cni-listen {target:?}: {other} is not accepted here: use unix:PATH, tcp:IP:PORT or ssl:IP:PORT"
            ))),
            Err(error) => Err(Error::Config(format!(
                "--cni-listen {target:?}: {}",
                error.reason
            ))),
        }
    }
}

/// Longest a TLS handshake on the CNI listener may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection the CNI listener accepted, not yet served.
enum Accepted {
    Unix(tokio::net::UnixStream, Caller),
    Tcp(tokio::net::TcpStream),
    Tls(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        switchyard_tls::TlsAcceptor,
    ),
}

pub(crate) async fn serve_cni(shared: Arc<Shared>, listener: CniListener) {
    loop {
        let accepted = match &listener {
            CniListener::Unix { listener, uids, .. } => match listener.accept().await {
                Ok((stream, _)) => {
                    let caller = match stream.peer_cred() {
                        Ok(cred) if cred.uid() == 0 || uids.contains(&cred.uid()) => {
                            Caller::Trusted
                        }
                        Ok(cred) => {
                            let allowed: Vec<String> = std::iter::once(0)
                                .chain(uids.iter().copied())
                                .map(|u| u.to_string())
                                .collect();
                            warn!(uid = cred.uid(), pid = ?cred.pid(),
                                "CNI: refused a unix socket peer whose uid may not attach pods");
                            Caller::Refused(format!(
                                "uid {} may not use the CNI socket (allowed uids: {}; see --cni-socket-uid)",
                                cred.uid(),
                                allowed.join(", ")
                            ))
                        }
                        Err(e) => Caller::Refused(format!(
                            "cannot read the peer's credentials (SO_PEERCRED): {e}"
                        )),
                    };
                    Accepted::Unix(stream, caller)
                }
                Err(e) => {
                    warn!("CNI accept: {e}");
                    continue;
                }
            },
            CniListener::Tcp(l) => match l.accept().await {
                Ok((stream, _)) => Accepted::Tcp(stream),
                Err(e) => {
                    warn!("CNI accept: {e}");
                    continue;
                }
            },
            CniListener::Tls(l, acceptor) => match l.accept().await {
                Ok((stream, peer)) => Accepted::Tls(stream, peer, acceptor.clone()),
                Err(e) => {
                    warn!("CNI accept: {e}");
                    continue;
                }
            },
        };
        // Each connection in its own task: a silent peer (or a slow leader) holds up
        // nobody else.
        tokio::spawn(serve_accepted(shared.clone(), accepted));
    }
}

/// Longest a standby waits to connect to the leader's CNI listener.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves one accepted connection: on a standby that knows the leader's CNI address
/// (`--cni-advertise`, read from the Lease), handed on to the leader unopened — bytes both
/// ways, TLS included, so the leader authenticates the node itself; otherwise (or when the
/// leader cannot be reached) answered here.
async fn serve_accepted(shared: Arc<Shared>, accepted: Accepted) {
    let leader = if shared.leadership.borrow().leader {
        None
    } else {
        shared.leader_cni.borrow().clone()
    };
    // A unix peer refused here is refused, not forwarded with the standby's own uid.
    let refused = matches!(&accepted, Accepted::Unix(_, Caller::Refused(_)));
    let accepted = match leader {
        Some(leader) if !refused => match forward(&shared, accepted, &leader).await {
            Ok(()) => return,
            Err(accepted) => accepted,
        },
        _ => accepted,
    };
    match accepted {
        Accepted::Unix(stream, caller) => cni_connection(shared, stream, caller).await,
        Accepted::Tcp(stream) => cni_connection(shared, stream, Caller::Trusted).await,
        Accepted::Tls(stream, peer, acceptor) => {
            let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            match tls {
                Ok(Ok(tls)) => match switchyard_tls::client_certificate(&tls) {
                    Some(cert) => cni_connection(shared, tls, Caller::Certified(cert)).await,
                    None => warn!(%peer, "CNI: a TLS peer without a certificate"),
                },
                Ok(Err(e)) => warn!(%peer,
                    "CNI: TLS handshake failed (no certificate, or one the --cni-tls-ca did not sign?): {e}"),
                Err(_) => warn!(%peer, "CNI: TLS handshake timed out"),
            }
        }
    }
}

/// Connects to the leader's CNI listener and copies bytes both ways until either side
/// closes. Gives the connection back, unread, when the leader cannot be reached.
async fn forward(shared: &Shared, accepted: Accepted, leader: &str) -> Result<(), Accepted> {
    let upstream = match Target::parse_connect(leader) {
        Ok(Target::Unix(path)) => tokio::time::timeout(
            FORWARD_CONNECT_TIMEOUT,
            tokio::net::UnixStream::connect(path),
        )
        .await
        .map(|r| r.map(Upstream::Unix)),
        Ok(Target::Tcp(addr) | Target::Ssl(addr)) => tokio::time::timeout(
            FORWARD_CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map(|r| r.map(Upstream::Tcp)),
        _ => Ok(Err(std::io::Error::other("not unix:, tcp: or ssl:"))),
    };
    let mut upstream = match upstream {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            shared.telemetry.error("cni_forward");
            warn!(
                leader,
                "CNI: standby cannot reach the leader's CNI listener ({e}); answering here (changes refused: try again)"
            );
            return Err(accepted);
        }
        Err(_) => {
            shared.telemetry.error("cni_forward");
            warn!(
                leader,
                "CNI: standby's connection to the leader's CNI listener timed out; answering here (changes refused: try again)"
            );
            return Err(accepted);
        }
    };
    shared.telemetry.cni_forwarded();
    debug!(leader, "CNI: standby handed a connection on to the leader");
    let copied = match accepted {
        Accepted::Unix(mut s, _) => upstream.splice(&mut s).await,
        Accepted::Tcp(mut s) | Accepted::Tls(mut s, _, _) => upstream.splice(&mut s).await,
    };
    if let Err(e) = copied {
        debug!(leader, "CNI: a forwarded connection ended: {e}");
    }
    Ok(())
}

/// The standby's connection to the leader's CNI listener.
enum Upstream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Upstream {
    async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        downstream: &mut S,
    ) -> std::io::Result<(u64, u64)> {
        match self {
            Upstream::Unix(u) => tokio::io::copy_bidirectional(downstream, u).await,
            Upstream::Tcp(u) => tokio::io::copy_bidirectional(downstream, u).await,
        }
    }
}

/// Where a standby reaches a replica listening on `cni_listen` (the `--cni-advertise`
/// default): the same address, an unspecified IP (0.0.0.0, ::) replaced by `pod_ip`;
/// `None` when there is none.
pub fn default_advertise(cni_listen: &str, pod_ip: Option<IpAddr>) -> Option<String> {
    let (scheme, host_port) = match Target::parse_connect(cni_listen).ok()? {
        Target::Unix(path) => return Some(format!("unix:{}", path.display())),
        Target::Tcp(hp) => ("tcp", hp),
        Target::Ssl(hp) => ("ssl", hp),
        _ => return None,
    };
    let (host, port) = host_port.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => match pod_ip? {
            IpAddr::V6(ip) => Some(format!("{scheme}:[{ip}]:{port}")),
            ip => Some(format!("{scheme}:{ip}:{port}")),
        },
        _ => Some(cni_listen.to_owned()),
    }
}

/// Longest request line accepted from a CNI shim.
const MAX_CNI_REQUEST: usize = 64 * 1024;

async fn cni_connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    stream: S,
    caller: Caller,
) {
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
            Ok(request) => handle_cni(&shared, &caller, request).await,
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

async fn handle_cni(shared: &Arc<Shared>, caller: &Caller, request: Request) -> Reply {
    if let Caller::Refused(why) = caller {
        return error_reply(CNI_FORBIDDEN, "caller refused", why.clone());
    }
    let node = match authenticate(caller, &request) {
        Ok(node) => node,
        Err(reply) => return reply,
    };
    // A standby programs no switch: an ADD, DEL or GC it took would change its own state
    // only (an address the leader does not know of) and then time out. Refused at once, so
    // the runtime retries, and the operator sees where the requests went.
    let changes = matches!(
        request,
        Request::Add(_) | Request::Del(_) | Request::Gc { .. }
    );
    if changes && !shared.leadership.borrow().leader {
        return error_reply(
            CNI_TRY_AGAIN,
            "standby",
            "this controller replica is the standby: only the leader (the holder of the \
             controller's Lease) attaches and detaches pods, and the standby hands requests \
             on to it only while the Lease names the leader's CNI address (--cni-advertise) \
             and that address answers — try again"
                .into(),
        );
    }
    match request {
        Request::Add(pod) => timed(shared, "add", cni_add(shared, pod, node)).await,
        Request::Del(pod) => timed(shared, "del", cni_del(shared, pod, node.as_deref())).await,
        Request::Check(pod) => match authorize_pod(shared, node.as_deref(), &pod, "check") {
            Ok(()) => cni_check(shared, pod).await,
            Err(reply) => reply,
        },
        Request::Status { node: asked } => cni_status(shared, asked.or(node).as_deref()),
        Request::Gc { node: asked, valid } => cni_gc(shared, &asked, valid).await,
    }
}

/// The node a caller proved to be (`None`: trusted for every node). A certified caller
/// names its node in the request (`node`), and its certificate must name the same.
fn authenticate(caller: &Caller, request: &Request) -> Result<Option<String>, Reply> {
    let Caller::Certified(cert) = caller else {
        return Ok(None);
    };
    let claimed = match request {
        Request::Add(p) | Request::Del(p) | Request::Check(p) => p.node.as_deref(),
        Request::Status { node } => node.as_deref(),
        Request::Gc { node, .. } => Some(node.as_str()),
    };
    let Some(claimed) = claimed.filter(|n| !n.is_empty()) else {
        return Err(error_reply(
            CNI_FORBIDDEN,
            "node not named",
            "a TLS caller must name its node in the request (the shim sends \"nodeName\" from its configuration, or the host name)".into(),
        ));
    };
    if !switchyard_tls::certificate_names(cert, claimed) {
        warn!(
            node = claimed,
            "CNI: refused a caller whose certificate does not name its node"
        );
        return Err(error_reply(
            CNI_FORBIDDEN,
            "wrong node certificate",
            format!(
                "the caller says it is node {claimed}, but its certificate does not name {claimed} (a node's CNI certificate carries its node name as a DNS subjectAltName)"
            ),
        ));
    }
    Ok(Some(claimed.to_owned()))
}

fn other_node(caller: &str, op: &str, pod: &ObjectKey, node: &str) -> Reply {
    warn!(caller, pod = %pod, node, op, "CNI: refused a request for another node's pod");
    error_reply(
        CNI_FORBIDDEN,
        "pod on another node",
        format!(
            "node {caller} (from its certificate) may not {op} pod {pod}: the pod is scheduled on node {node} (spec.nodeName); a node acts only for its own pods"
        ),
    )
}

/// A certified caller may act only for pods scheduled on its node (the state's view).
fn authorize_pod(
    shared: &Arc<Shared>,
    caller: Option<&str>,
    pod: &PodRef,
    op: &str,
) -> Result<(), Reply> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let key = ObjectKey::new(&pod.namespace, &pod.pod);
    let snap = shared.state.snapshot();
    let node = if pod.pod.is_empty() {
        // DEL without CNI_ARGS: the attachment of the container, wherever it is.
        snap.nodes()
            .find(|n| {
                snap.attachments_on(&n.name)
                    .any(|a| a.container_id == pod.container_id)
            })
            .map(|n| n.name.to_string())
    } else {
        snap.pod(&key).map(|p| p.node.clone())
    };
    match node {
        Some(node) if node != caller => Err(other_node(caller, op, &key, &node)),
        _ => Ok(()),
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

async fn cni_add(shared: &Arc<Shared>, req: PodRef, caller: Option<String>) -> Reply {
    let key = ObjectKey::new(&req.namespace, &req.pod);
    // The host end is the shim's veth, named from the container and ifname: no other host
    // interface (the node's uplink, another pod's veth) can be put on br-int as a pod.
    let expected = host_iface_name(&req.container_id, &req.ifname);
    if req.host_iface != expected {
        return error_reply(
            CNI_BAD_REQUEST,
            "bad host interface name",
            format!(
                "pod {key}: host interface {:?} is not the one of container {} and ifname {:?} ({expected}); only the shim's own veth end is attached",
                req.host_iface, req.container_id, req.ifname
            ),
        );
    }
    let started = tokio::time::Instant::now();
    let deadline = started + shared.config.cni_timeout;
    // The runtime may call us before the watch has delivered the pod: wait for it, unless
    // the source itself says it has no such pod (then waiting only delays the error).
    let mut snapshots = shared.state.subscribe();
    let mut asked_source = false;
    // An ADD again of the attached container must not undo the running attachment.
    let again = shared
        .state
        .snapshot()
        .attachment(&key)
        .is_some_and(|a| a.container_id == req.container_id);
    let attached = loop {
        snapshots.borrow_and_update();
        let replaces = match takeover(shared, &key, &req.container_id) {
            Ok(replaces) => replaces,
            Err(reply) => return reply,
        };
        let rules = AttachRules {
            caller_node: caller.clone(),
            replaces,
        };
        match shared
            .state
            .attach_checked(&key, &req.host_iface, &req.container_id, rules)
            .await
        {
            Ok(a) => break a,
            Err(AttachError::OtherNode { pod, node, caller }) => {
                return other_node(&caller, "attach", &pod, &node);
            }
            Err(AttachError::Running { pod, running }) => {
                return running_reply(&pod, &running, "it is still being attached");
            }
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
    let (node, ip, fresh) = (attached.node.clone(), attached.ip, attached.fresh_address);
    let attached_at = tokio::time::Instant::now();
    info!(pod = %key, node = %node.name, %ip, iface = %req.host_iface, "CNI ADD");
    let installed = lock(&shared.agents)
        .get(&*node.name)
        .map(|a| a.installed.clone());
    let ready_wait = async {
        match installed {
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
        }
    };
    // The flows and vswitchd's verdict on the port, together: a port vswitchd fails
    // (the interface does not exist) fails the ADD at once. A shim that has just made the
    // interface in the node's namespace vouches for it (`host_ifindex`); once vswitchd has
    // accepted such an interface on this node, shims there are known to make their veths
    // where vswitchd sees them, and the ADD answers with the flows in and the port
    // committed to OVSDB, while vswitchd numbers it. Its verdict is still watched.
    let vouched = req.host_ifindex.is_some() && shims_verified(shared, &node.name, &req.host_iface);
    let verdict_wait = async {
        if vouched {
            let (shared, node, iface, key, container) = (
                shared.clone(),
                node.name.to_string(),
                req.host_iface.clone(),
                key.clone(),
                req.container_id.clone(),
            );
            tokio::spawn(async move {
                if let Err(why) = interface_verdict(&shared, &node, &iface, deadline).await {
                    shared.telemetry.error("cni");
                    warn!(pod = %key, %node, %iface,
                        "CNI ADD answered, then vswitchd could not add the host interface the shim vouched for ({why}); undoing the attachment (CHECK reports the pod missing; the runtime's DEL finds nothing)");
                    // Nothing of it stays, as for an ADD that waited: only this container's
                    // attachment (a newer ADD's is left alone) and its fresh address.
                    if !again {
                        undo_attach(&shared, &key, &container, &node, fresh).await;
                    }
                }
            });
            Ok(())
        } else {
            interface_verdict(shared, &node.name, &req.host_iface, deadline).await
        }
    };
    tokio::pin!(ready_wait, verdict_wait);
    let (mut ready, mut verdict) = (None, None);
    // When each arrived, for the phase timing at debug level.
    let (mut ready_at, mut verdict_at) = (None, None);
    while ready.is_none() || verdict.is_none() {
        tokio::select! {
            r = &mut ready_wait, if ready.is_none() => {
                ready = Some(r);
                ready_at = Some(tokio::time::Instant::now());
            }
            v = &mut verdict_wait, if verdict.is_none() => {
                let failed = v.is_err();
                verdict = Some(v);
                verdict_at = Some(tokio::time::Instant::now());
                if failed {
                    break;
                }
            }
        }
    }
    let since_attach =
        |t: Option<tokio::time::Instant>| t.map(|t| (t - attached_at).as_secs_f64() * 1e3);
    debug!(pod = %key, container = %req.container_id, vouched, attach_ms = (attached_at - started).as_secs_f64() * 1e3,
        flows_ms = ?since_attach(ready_at), port_ms = ?since_attach(verdict_at),
        "CNI ADD phases (attach: in the state; flows, port: since the attach, until the pod's \
         flows were installed and vswitchd gave its port a number, unless vouched)");
    let ready = ready.unwrap_or(false);
    let verdict = verdict.unwrap_or(Ok(()));
    if let Err(why) = verdict {
        // Nothing of a failed ADD stays: attachment (port, flows) and a fresh address. An
        // ADD again of the attached container leaves that to the runtime's DEL.
        if !again {
            undo_attach(shared, &key, &req.container_id, &node.name, fresh).await;
        }
        return error_reply(
            CNI_NO_INTERFACE,
            "host interface unusable",
            format!(
                "pod {key} on node {}: vswitchd cannot add the host interface {} (does it exist on the node?): {why}",
                node.name, req.host_iface
            ),
        );
    }
    if !ready {
        if !again {
            undo_attach(shared, &key, &req.container_id, &node.name, fresh).await;
        }
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

/// The takeover rule (docs/operations.md, *ADD for a pod that is already attached*): an
/// ADD with another container id than the attached one may replace that attachment only
/// when it is dead: its host interface is gone from the node's OVSDB view, vswitchd
/// reports it failed (ofport -1, an error), or the device under the port is gone (the
/// veth went with its netns). `Ok(Some(old))`: the attachment of `old` may be replaced;
/// `Ok(None)`: nothing to replace.
fn takeover(
    shared: &Arc<Shared>,
    key: &ObjectKey,
    container_id: &str,
) -> Result<Option<String>, Reply> {
    let snap = shared.state.snapshot();
    let Some(held) = snap
        .attachment(key)
        .filter(|a| a.container_id != container_id)
    else {
        return Ok(None);
    };
    let Some(node) = snap.pod(key).map(|p| p.node.clone()) else {
        return Ok(None);
    };
    let watches = lock(&shared.agents)
        .get(&node)
        .map(|a| (a.ports.clone(), a.status.clone()));
    let Some((ports, status)) = watches else {
        return Err(running_reply(
            key,
            &held.container_id,
            &format!("node {node} has no agent to tell whether it is alive"),
        ));
    };
    if !status.borrow().ovsdb_connected {
        return Err(error_reply(
            CNI_TRY_AGAIN,
            "cannot tell whether the running container is alive",
            format!(
                "pod {key} is attached for container {}; node {node}'s OVSDB is not connected, so whether its port {} is alive is unknown: try again",
                held.container_id, held.iface
            ),
        ));
    }
    let view = ports.borrow().get(&held.iface).cloned();
    let dead = match view {
        // Not yet in OVSDB: its ADD is in progress (the agent adds it in its next pass).
        None => None,
        Some(v) if v.ofport == Some(-1) || v.error.is_some() => Some(format!(
            "vswitchd failed its port ({})",
            v.error.as_deref().unwrap_or("ofport -1")
        )),
        // Not processed by vswitchd yet: still being attached.
        Some(v) if v.ofport.is_none() => None,
        Some(v) if !v.has_device => {
            Some("the device under its port is gone (its veth went with its netns)".to_owned())
        }
        Some(_) => {
            return Err(running_reply(
                key,
                &held.container_id,
                &format!("its port {} is up on br-int", held.iface),
            ));
        }
    };
    match dead {
        Some(why) => {
            info!(pod = %key, old = %held.container_id, new = %container_id, iface = %held.iface,
                "CNI ADD: the pod's attached container is dead ({why}); the new one takes over");
            Ok(Some(held.container_id.clone()))
        }
        None => Err(running_reply(
            key,
            &held.container_id,
            "it is still being attached",
        )),
    }
}

fn running_reply(key: &ObjectKey, running: &str, why: &str) -> Reply {
    error_reply(
        CNI_POD_RUNNING,
        "pod attached for another container",
        format!(
            "pod {key} is attached for container {running} ({why}): an ADD for another container does not take over a running pod's address; DEL container {running} first (the runtime does, before it makes a new sandbox)"
        ),
    )
}

/// Whether vswitchd on `node` holds, numbered and with its device, a pod interface other
/// than `iface`: a shim there made it where vswitchd runs, so shims on that node do.
fn shims_verified(shared: &Arc<Shared>, node: &str, iface: &str) -> bool {
    let Some(ports) = lock(&shared.agents).get(node).map(|a| a.ports.clone()) else {
        return false;
    };
    ports.borrow().iter().any(|(name, v)| {
        name != iface
            && switchyard_cni::api::is_host_iface_name(name)
            && v.ofport.is_some_and(|p| p > 0)
            && v.has_device
            && v.error.is_none()
    })
}

/// Waits (until `deadline`) for vswitchd's verdict on a new pod port: `Ok` once it has an
/// ofport and a device under it, `Err(why)` when vswitchd failed it (the interface does
/// not exist on the node). Without an OVSDB connection, or without a verdict by
/// `deadline`, nothing can be told: `Ok`.
async fn interface_verdict(
    shared: &Arc<Shared>,
    node: &str,
    iface: &str,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let watches = lock(&shared.agents)
        .get(node)
        .map(|a| (a.ports.clone(), a.status.clone()));
    let Some((mut ports, status)) = watches else {
        return Ok(());
    };
    let verdict = tokio::time::timeout_at(deadline, async {
        loop {
            if !status.borrow().ovsdb_connected {
                return Ok(());
            }
            let view = ports.borrow_and_update().get(iface).cloned();
            match view {
                Some(v) if v.ofport == Some(-1) || v.error.is_some() => {
                    return Err(v.error.unwrap_or_else(|| "ofport -1".into()));
                }
                Some(v) if v.ofport.is_some_and(|p| p > 0) && v.has_device => return Ok(()),
                _ => {}
            }
            if ports.changed().await.is_err() {
                return Ok(());
            }
        }
    })
    .await;
    // No verdict in time (vswitchd busy or stopped): the flows' wait decides.
    verdict.unwrap_or(Ok(()))
}

/// Takes back what a failed ADD made: the attachment of `container_id` (its port and
/// flows go, and this waits until the port is out of OVSDB) and, when this ADD
/// allocated it, the address.
async fn undo_attach(
    shared: &Arc<Shared>,
    key: &ObjectKey,
    container_id: &str,
    node: &str,
    fresh: bool,
) {
    if let Some(detached) = shared.state.detach(key, container_id).await {
        wait_ports_gone(shared, node, std::slice::from_ref(&detached.port.iface)).await;
    }
    if fresh {
        shared.state.release_unattached(key).await;
    }
}

async fn cni_del(shared: &Arc<Shared>, req: PodRef, caller: Option<&str>) -> Reply {
    if let Err(reply) = authorize_pod(shared, caller, &req, "detach") {
        return reply;
    }
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
    let Some((mut ports, installed, conn)) = agent else {
        return check_failed(&key, format!("node {} has no agent", node.name));
    };
    // An ADD may answer before the replica shows its port or vswitchd has numbered it (a
    // vouched ADD): a CHECK right after it waits (briefly) for that to settle.
    let _ = tokio::time::timeout(CHECK_SETTLE, async {
        loop {
            let settled = ports
                .borrow_and_update()
                .get(&a.iface)
                .is_some_and(|v| v.ofport.is_some());
            if settled || ports.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
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

#[cfg(test)]
mod tests {
    use super::default_advertise;

    #[test]
    fn the_advertised_cni_address_replaces_an_unspecified_ip_by_the_pod_ip() {
        let pod = Some("10.0.0.5".parse().unwrap());
        assert_eq!(
            default_advertise("ssl:0.0.0.0:6654", pod).as_deref(),
            Some("ssl:10.0.0.5:6654")
        );
        assert_eq!(
            default_advertise("tcp:[::]:6654", Some("fd00::5".parse().unwrap())).as_deref(),
            Some("tcp:[fd00::5]:6654")
        );
        assert_eq!(default_advertise("ssl:0.0.0.0:6654", None), None);
        assert_eq!(
            default_advertise("ssl:192.0.2.7:6654", pod).as_deref(),
            Some("ssl:192.0.2.7:6654")
        );
        assert_eq!(
            default_advertise("unix:/run/switchyard/cni.sock", pod).as_deref(),
            Some("unix:/run/switchyard/cni.sock")
        );
        assert_eq!(default_advertise("punix:/x", pod), None);
    }
}
