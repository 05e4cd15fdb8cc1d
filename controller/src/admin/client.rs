//! A client of the admin API, as `yardctl` and the tests reach it: `unix:PATH` (or a bare
//! path), or `tcp:HOST:PORT` — with mutual TLS when CA, certificate and key are given.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use switchyard_target::Target;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::AdminError;
use super::TlsFiles;
use super::proto::admin_client::AdminClient;

/// Connects to the admin API at `server`. `tls` holds the CA that signed the server's
/// certificate and the client's own certificate and key.
pub async fn connect(
    server: &str,
    tls: Option<&TlsFiles>,
) -> Result<AdminClient<Channel>, ClientError> {
    let target = if server.starts_with('/') {
        Target::Unix(PathBuf::from(server))
    } else {
        Target::parse_connect(server).map_err(|e| {
            ClientError::Config(
                AdminError::BadAddress {
                    flag: "--server",
                    value: server.to_owned(),
                    reason: e.reason.to_string(),
                }
                .to_string(),
            )
        })?
    };
    let channel = match target {
        Target::Unix(path) => {
            if tls.is_some() {
                return Err(ClientError::Config(
                    "--tls-* apply to tcp: servers; a unix socket needs none".into(),
                ));
            }
            // The URI is required but unused: the connector opens the socket.
            Endpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| ClientError::Unreachable(format!("{server}: {}", source_chain(&e))))?
        }
        Target::Tcp(hostport) => {
            let host = hostport
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(&hostport)
                .to_owned();
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{hostport}"))
                .map_err(|e| ClientError::Config(format!("--server {server}: {e}")))?;
            if let Some(files) = tls {
                let read = |flag: &'static str, path: &PathBuf| {
                    std::fs::read(path)
                        .map_err(|e| ClientError::Config(format!("{flag} {}: {e}", path.display())))
                };
                let ca = read("--tls-ca", &files.ca)?;
                let cert = read("--tls-cert", &files.cert)?;
                let key = read("--tls-key", &files.key)?;
                endpoint = endpoint
                    .tls_config(
                        ClientTlsConfig::new()
                            .ca_certificate(Certificate::from_pem(ca))
                            .identity(Identity::from_pem(cert, key))
                            .domain_name(host),
                    )
                    .map_err(|e| ClientError::Config(format!("TLS: {}", source_chain(&e))))?;
            }
            endpoint
                .connect()
                .await
                .map_err(|e| ClientError::Unreachable(format!("{server}: {}", source_chain(&e))))?
        }
        other => {
            return Err(ClientError::Config(format!(
                "--server {server}: {other} is not accepted: use unix:PATH, /PATH or tcp:HOST:PORT"
            )));
        }
    };
    Ok(AdminClient::new(channel))
}

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address or the TLS files are wrong.
    #[error("{0}")]
    Config(String),
    /// Nothing answers there (or the TLS handshake failed).
    #[error(
        "cannot reach the admin API at {0} (is the controller running with --admin-listen there? set --server or SWITCHYARD_ADMIN)"
    )]
    Unreachable(String),
}

/// An error with its causes, `a: b: c`: tonic's transport errors say little on their own.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
