//! The operator's surface: the gRPC admin API (`switchyard.admin.v1`, see
//! controller/proto/switchyard/admin/v1/admin.proto), its client, and the metrics endpoint.
//!
//! Owns: the listeners (a unix socket by default; TCP only with mutual TLS, or plaintext on
//! loopback), the answers to each RPC and the HTTP endpoint's three paths. Does not own any
//! state: every answer is read from the state's latest [`crate::state::Snapshot`], the node
//! agents' status and, for flows, the agent's own OpenFlow connection to the node's br-int
//! at the time of the call. The work of one call is proportional to what it returns (one
//! node's flows, one pod's flows, the nodes' status).

pub mod client;
pub mod metrics;
mod owners;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_target::Target;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tracing::{debug, info, warn};

use crate::controller::Shared;

/// The generated messages, server and client of `switchyard.admin.v1`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("switchyard.admin.v1");
}

pub use owners::OwnerNames;

/// The default `--admin-listen`.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/switchyard/admin.sock";

/// What went wrong in the admin layer: its flags, its listeners, or one request. Each
/// message names what to change or where to look.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An address flag does not parse.
    #[error("{flag} {value:?}: {reason}")]
    BadAddress {
        /// The flag (`--admin-listen`, `--metrics-listen`, `--server`).
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Plaintext TCP on an address other hosts can reach.
    #[error("{flag} {addr}: refusing plaintext {what} on a non-loopback address; {remedy}")]
    PlaintextRemote {
        /// The flag.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What would be served (`gRPC`, `HTTP`).
        what: &'static str,
        /// How to make it acceptable.
        remedy: &'static str,
    },
    /// Some but not all TLS files were given, or TLS with a unix socket.
    #[error("{0}")]
    TlsFlags(String),
    /// A TLS file cannot be read.
    #[error("{flag} {path}: {source}")]
    TlsFile {
        /// The flag naming the file.
        flag: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS configuration was refused (a file is not PEM, key and certificate differ).
    #[error(
        "TLS configuration: {0} (is --admin-tls-ca a PEM CA certificate, and are --admin-tls-cert/--admin-tls-key a PEM certificate and its key?)"
    )]
    Tls(String),
    /// A listener could not be opened.
    #[error(
        "cannot listen for the {what} on {target}: {source} (is another controller running, or is the address not this machine's?)"
    )]
    Listen {
        /// `admin API` or `metrics`.
        what: &'static str,
        /// The address.
        target: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server stopped.
    #[error("the admin API server stopped: {0}")]
    Serve(String),
    /// The request names a node the state does not hold.
    #[error("unknown node {0:?} (yardctl status lists the nodes)")]
    UnknownNode(String),
    /// The request names a pod the state does not hold.
    #[error("unknown pod {0} (not in the controller's view: yardctl pods lists them)")]
    UnknownPod(String),
    /// The node's br-int is not connected, so nothing can be read from it.
    #[error(
        "node {0}: br-int is not connected to the controller (ovs-vsctl list Controller on the node: is_connected)"
    )]
    NotConnected(String),
    /// The switch answered a request with an error.
    #[error("node {node}: {what}: {source}")]
    Switch {
        /// The node.
        node: String,
        /// What was asked.
        what: &'static str,
        /// The OpenFlow error.
        source: openflow::Error,
    },
    /// A request argument is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A packet trace could not be run.
    #[error("trace: {0}")]
    Trace(crate::trace::TraceError),
}

impl From<AdminError> for tonic::Status {
    fn from(e: AdminError) -> tonic::Status {
        let message = e.to_string();
        match e {
            AdminError::UnknownNode(_) | AdminError::UnknownPod(_) => {
                tonic::Status::not_found(message)
            }
            AdminError::NotConnected(_) => tonic::Status::unavailable(message),
            AdminError::BadRequest(_) | AdminError::BadAddress { .. } => {
                tonic::Status::invalid_argument(message)
            }
            AdminError::Trace(e) => {
                use crate::trace::TraceError as T;
                match e {
                    T::UnknownNode(..)
                    | T::UnknownPod(_)
                    | T::UnknownPort { .. }
                    | T::UnknownService(_)
                    | T::NoServicePort { .. } => tonic::Status::not_found(message),
                    T::Syntax { .. } => tonic::Status::invalid_argument(message),
                    T::NoFlows(_) | T::NoAddress(_) | T::NotAttached { .. } => {
                        tonic::Status::failed_precondition(message)
                    }
                }
            }
            _ => tonic::Status::internal(message),
        }
    }
}

/// The TLS files of the admin API's TCP listener (all three, PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the clients' certificates (`--admin-tls-ca`).
    pub ca: PathBuf,
    /// The server's certificate chain (`--admin-tls-cert`).
    pub cert: PathBuf,
    /// The server's private key (`--admin-tls-key`).
    pub key: PathBuf,
}

impl TlsFiles {
    /// All three or none; `flags` names them as the command line spells them.
    pub fn from_flags(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        flags: [&str; 3],
    ) -> Result<Option<TlsFiles>, AdminError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [ca.is_none(), cert.is_none(), key.is_none()]
                    .iter()
                    .zip(flags)
                    .filter(|(m, _)| **m)
                    .map(|(_, f)| f)
                    .collect();
                Err(AdminError::TlsFlags(format!(
                    "mutual TLS needs {}, {} and {} together; missing {}",
                    flags[0],
                    flags[1],
                    flags[2],
                    missing.join(", ")
                )))
            }
        }
    }
}

/// Where the admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminListen {
    /// A unix socket (the default): reachable by who may open the file.
    Unix(PathBuf),
    /// TCP; `tls` is `None` only on a loopback address.
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The server's TLS files; clients must present a certificate the CA signed.
        tls: Option<TlsFiles>,
    },
}

/// The admin API's configuration (`--admin-listen`, `--admin-tls-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to listen.
    pub listen: AdminListen,
}

impl AdminConfig {
    /// Validates `--admin-listen` (`unix:PATH`, an absolute path, or `tcp:IP:PORT`) with the
    /// TLS files. Plaintext TCP is refused unless the address is loopback.
    pub fn new(listen: &str, tls: Option<TlsFiles>) -> Result<AdminConfig, AdminError> {
        const FLAG: &str = "--admin-listen";
        let bad = |reason: String| AdminError::BadAddress {
            flag: FLAG,
            value: listen.to_owned(),
            reason,
        };
        if tls.is_some() && (listen.starts_with('/') || listen.starts_with("unix:")) {
            return Err(AdminError::TlsFlags(format!(
                "--admin-tls-* apply to a TCP listener; --admin-listen {listen} is a unix socket (use tcp:IP:PORT for mutual TLS)"
            )));
        }
        let listen = if listen.starts_with('/') {
            AdminListen::Unix(PathBuf::from(listen))
        } else {
            match Target::parse_connect(listen) {
                Ok(Target::Unix(path)) => AdminListen::Unix(path),
                Ok(Target::Tcp(hostport)) => {
                    let addr: SocketAddr = hostport.parse().map_err(|_| {
                        bad(format!(
                            "{hostport} is not IP:PORT (a host name is not accepted here)"
                        ))
                    })?;
                    if tls.is_none() && !addr.ip().is_loopback() {
                        return Err(AdminError::PlaintextRemote {
                            flag: FLAG,
                            addr,
                            what: "gRPC",
                            remedy: "give --admin-tls-ca, --admin-tls-cert and --admin-tls-key for mutual TLS, or listen on a unix socket or a loopback address",
                        });
                    }
                    AdminListen::Tcp { addr, tls }
                }
                Ok(other) => {
                    return Err(bad(format!(
                        "{other} is not accepted here: use unix:PATH, /PATH or tcp:IP:PORT"
                    )));
                }
                Err(e) => return Err(bad(e.reason.to_string())),
            }
        };
        Ok(AdminConfig { listen })
    }

    /// The address as `yardctl --server` takes it.
    pub fn server_address(&self) -> String {
        match &self.listen {
            AdminListen::Unix(path) => format!("unix:{}", path.display()),
            AdminListen::Tcp { addr, .. } => format!("tcp:{addr}"),
        }
    }
}

fn read_tls_file(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, AdminError> {
    std::fs::read(path).map_err(|source| AdminError::TlsFile {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// A bound admin listener, ready to serve.
pub(crate) enum BoundAdmin {
    Unix(tokio::net::UnixListener),
    /// Plaintext TCP (loopback only).
    Tcp(tokio::net::TcpListener),
    /// Mutual TLS: the acceptor re-reads the `--admin-tls-*` files when they change.
    Tls(tokio::net::TcpListener, switchyard_tls::TlsAcceptor),
}

/// The mutual-TLS acceptor of the admin API. Built from the `--admin-tls-*` files with
/// [`switchyard_tls::server_config`], as the switch and CNI listeners are: the CA, the
/// certificate and the key are re-read at the next handshake after they change (a file
/// that does not load keeps the last good one), so a renewal or a CA rotation needs no
/// restart.
fn tls_acceptor(files: &TlsFiles) -> Result<switchyard_tls::TlsAcceptor, AdminError> {
    // Read once here so that a missing or unreadable file is named by its flag.
    read_tls_file("--admin-tls-ca", &files.ca)?;
    read_tls_file("--admin-tls-cert", &files.cert)?;
    read_tls_file("--admin-tls-key", &files.key)?;
    let shared = switchyard_tls::server_config(&switchyard_tls::TlsFiles {
        ca: files.ca.clone(),
        certificate: files.cert.clone(),
        private_key: files.key.clone(),
    })
    .map_err(|e| AdminError::Tls(e.to_string()))?;
    // gRPC is HTTP/2, which TLS clients (tonic's among them) expect to agree on by ALPN.
    // The clone shares the reloading CA verifier and certificate resolver.
    let mut config = (*shared).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(switchyard_tls::TlsAcceptor::from(Arc::new(config)))
}

/// Opens the admin API's listener (so a bad address fails the controller at start).
pub(crate) async fn bind(config: &AdminConfig) -> Result<BoundAdmin, AdminError> {
    let target = config.server_address();
    let fail = |source: std::io::Error| AdminError::Listen {
        what: "admin API",
        target: target.clone(),
        source,
    };
    match &config.listen {
        AdminListen::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(fail)?;
            }
            // A socket a live controller serves is not taken over; a stale one is replaced.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "a live server answers on this socket",
                )));
            }
            // Only a socket is replaced: a mistyped path must not delete someone's file.
            match std::fs::symlink_metadata(path) {
                Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                    let _ = std::fs::remove_file(path);
                }
                Ok(_) => {
                    return Err(fail(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the path exists and is not a socket",
                    )));
                }
                Err(_) => {}
            }
            Ok(BoundAdmin::Unix(
                tokio::net::UnixListener::bind(path).map_err(fail)?,
            ))
        }
        AdminListen::Tcp { addr, tls } => {
            let acceptor = tls.as_ref().map(tls_acceptor).transpose()?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
            Ok(match acceptor {
                Some(acceptor) => BoundAdmin::Tls(listener, acceptor),
                None => BoundAdmin::Tcp(listener),
            })
        }
    }
}

/// Longest a client may take over its TLS handshake with the admin API.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop waits after a failed accept (out of file descriptors, say)
/// before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Established TLS connections waiting for the gRPC server to take them.
const ESTABLISHED_QUEUE: usize = 16;

/// Accepts TCP connections for ever; each one's TLS handshake runs in its own task, so a
/// slow or failing client holds up neither the loop nor the other clients. Established
/// connections go to `established`; a failed handshake is logged with the peer's address
/// and its connection closed.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: switchyard_tls::TlsAcceptor,
    established: mpsc::Sender<switchyard_tls::server::TlsStream<tokio::net::TcpStream>>,
) -> std::convert::Infallible {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin API: cannot accept a TCP connection; trying again");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let established = established.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server has stopped; the connection is dropped.
                    let _ = established.send(tls).await;
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    debug!(%peer, "admin API: the client closed the connection before the TLS handshake finished");
                }
                Ok(Err(e)) => warn!(%peer,
                    "admin API: TLS handshake failed (no client certificate, or one --admin-tls-ca did not sign?): {e}"),
                Err(_) => warn!(%peer,
                    "admin API: TLS handshake not finished within {TLS_HANDSHAKE_TIMEOUT:?}; connection closed"),
            }
        });
    }
}

/// Serves the admin API on `listener` until it fails.
pub(crate) async fn serve(shared: Arc<Shared>, listener: BoundAdmin) -> Result<(), AdminError> {
    use proto::admin_server::AdminServer;
    let service = AdminServer::new(service::AdminService::new(shared));
    let server = tonic::transport::Server::builder().add_service(service);
    match listener {
        BoundAdmin::Unix(l) => {
            info!(listen = ?l.local_addr().ok(), "admin API ready (unix socket)");
            server
                .serve_with_incoming(UnixListenerStream::new(l))
                .await
        }
        BoundAdmin::Tcp(l) => {
            info!(addr = ?l.local_addr().ok(), "admin API ready (TCP on loopback, plaintext)");
            server.serve_with_incoming(TcpListenerStream::new(l)).await
        }
        BoundAdmin::Tls(l, acceptor) => {
            info!(addr = ?l.local_addr().ok(),
                "admin API ready (TCP, mutual TLS; the --admin-tls-* files are re-read when they change)");
            let (established, incoming) = mpsc::channel(ESTABLISHED_QUEUE);
            let incoming = ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>);
            tokio::select! {
                served = server.serve_with_incoming(incoming) => served,
                never = accept_tls(l, acceptor, established) => match never {},
            }
        }
    }
    .map_err(|e| AdminError::Serve(e.to_string()))
}
