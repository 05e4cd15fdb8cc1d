//! TLS for the switch channels: the OpenFlow listener (`pssl:`, ovs-vswitchd connects with
//! `ssl:`) and the OVSDB client (`ssl:` to ovsdb-server's `pssl:`).
//!
//! Both sides prove who they are: every peer presents a certificate signed by the one CA
//! the operator gives (`ca`), and the controller presents its own (`certificate`,
//! `private_key`). This is what OVS does with `ovs-vsctl set-ssl KEY CERT CA`: it refuses
//! a peer without a certificate from its CA. A node's certificate must name the node (a
//! DNS subjectAltName equal to the Kubernetes node name): [`certificate_names`] checks it,
//! so a switch holding some other node's certificate cannot pass as this one.
//!
//! Knows nothing of OpenFlow, OVSDB or Kubernetes; the protocol crates take the configs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub use rustls::{self, ClientConfig, ServerConfig};
pub use rustls_pki_types;
pub use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// The three PEM files of one TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) every peer's certificate must chain to.
    pub ca: PathBuf,
    /// Our certificate (chain), signed by that CA.
    pub certificate: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// What went wrong with TLS, naming the file or the peer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("TLS: cannot read the {what} {}: {source}", path.display())]
    Read {
        /// "CA certificate", "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds nothing of the kind in PEM form.
    #[error("TLS: the {what} {} holds no PEM {what}", path.display())]
    Empty {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The files parse but do not make a configuration (wrong key for the certificate,
    /// unusable CA).
    #[error("TLS: {what}: {reason}")]
    Invalid {
        /// Which configuration.
        what: &'static str,
        /// rustls's words.
        reason: String,
    },
    /// A name that cannot be a TLS server name.
    #[error("TLS: {name:?} cannot be checked against a certificate (not a DNS name or IP address)")]
    BadName {
        /// The name.
        name: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit, so that no other crate's choice of default provider matters.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.into(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::Empty {
            what,
            path: path.into(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| Error::Empty {
        what: "private key",
        path: path.into(),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA certificate", path)? {
        roots.add(cert).map_err(|e| Error::Invalid {
            what: "CA certificate",
            reason: format!("{}: {e}", path.display()),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The CA file, read again whenever it changes (as [`FileIdentity`] does for our own pair),
/// so that a CA rotation — a bundle of the old and the new CA mounted first, the old one
/// dropped later — takes effect from the next handshake without a restart. A CA file that
/// does not load keeps the last good one in use, logged once per change and tried again at
/// every handshake. Checks both ways: client certificates at our listeners, the server's
/// certificate where we connect.
#[derive(Debug)]
struct FileCa {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<LoadedCa>,
}

#[derive(Debug)]
struct LoadedCa {
    stamp: FileStamp,
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
    failed: Option<FileStamp>,
}

fn ca_verifiers(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<dyn ClientCertVerifier>, Arc<WebPkiServerVerifier>), Error> {
    let roots = roots(path)?;
    let invalid = |e: &dyn std::fmt::Display| Error::Invalid {
        what: "CA certificate",
        reason: format!("{}: {e}", path.display()),
    };
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid(&e))?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| invalid(&e))?;
    Ok((clients, servers))
}

impl FileCa {
    /// Loads the CA; an error names the file (the caller refuses to start).
    fn load(path: &Path) -> Result<Arc<FileCa>, Error> {
        let provider = provider();
        let stamp = file_stamp(path);
        let (clients, servers) = ca_verifiers(path, &provider)?;
        Ok(Arc::new(FileCa {
            path: path.to_owned(),
            provider,
            current: Mutex::new(LoadedCa {
                stamp,
                clients,
                servers,
                failed: None,
            }),
        }))
    }

    fn current(&self) -> (Arc<dyn ClientCertVerifier>, Arc<WebPkiServerVerifier>) {
        let now = file_stamp(&self.path);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.stamp != now {
            match ca_verifiers(&self.path, &self.provider) {
                Ok((clients, servers)) => {
                    tracing::info!(ca = %self.path.display(),
                        "TLS: the CA certificate changed on disk; checking peers against the new one");
                    *current = LoadedCa {
                        stamp: now,
                        clients,
                        servers,
                        failed: None,
                    };
                }
                Err(e) => {
                    if current.failed != Some(now) {
                        tracing::warn!(error = %e,
                            "TLS: the CA certificate changed on disk but does not load; \
                             still checking peers against the previous one");
                        current.failed = Some(now);
                    }
                }
            }
        }
        (current.clients.clone(), current.servers.clone())
    }
}

/// The handshake signature checks: the provider's algorithms, whatever the CA (as rustls's
/// own WebPki verifiers do), so they need not look at the current CA.
impl FileCa {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for FileCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would have to outlive a CA change. A client with one certificate
        // (ovs-vswitchd, the CNI plugin) presents it whatever the hints say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .0
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ServerCertVerifier for FileCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().1.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// Our certificate and its key, read again whenever either file changes (inode, size or
/// modification time: a rename in place, a rewrite, a Secret volume kubelet updates), so a
/// renewed certificate is presented from the next handshake on without a restart. A pair
/// that does not load — the new key written and the certificate not yet, a truncated file,
/// the two read on either side of a switch — keeps the last good pair in use and is logged
/// once per change; it is tried again at every handshake until it loads. (ovs-vswitchd
/// does the same with its `set-ssl` files.)
#[derive(Debug)]
struct FileIdentity {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

/// The pair in use, the files' stamp it was read at, and the stamp of files that last
/// failed to load (logged once).
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
    failed: Option<Stamp>,
}

/// What tells a changed file: its (inode, size, mtime), following links.
type FileStamp = Option<(u64, u64, SystemTime)>;

fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// The stamps of the certificate and of the key.
type Stamp = [FileStamp; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.certificate, &files.private_key].map(|path| file_stamp(path))
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    CertifiedKey::from_der(
        certificates("certificate", &files.certificate)?,
        private_key(&files.private_key)?,
        provider,
    )
    .map_err(|e| Error::Invalid {
        what: "certificate and key",
        reason: format!(
            "{} with {}: {e}",
            files.certificate.display(),
            files.private_key.display()
        ),
    })
}

impl FileIdentity {
    /// Loads the pair; an error names the file (the caller refuses to start).
    fn load(files: &TlsFiles) -> Result<Arc<FileIdentity>, Error> {
        let provider = provider();
        let stamp = stamp(files);
        let key = certified_key(files, &provider)?;
        Ok(Arc::new(FileIdentity {
            files: files.clone(),
            provider,
            current: Mutex::new(Loaded {
                stamp,
                key: Arc::new(key),
                failed: None,
            }),
        }))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let now = stamp(&self.files);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.stamp != now {
            match certified_key(&self.files, &self.provider) {
                Ok(key) => {
                    tracing::info!(certificate = %self.files.certificate.display(),
                        "TLS: the certificate changed on disk; presenting the new one");
                    *current = Loaded {
                        stamp: now,
                        key: Arc::new(key),
                        failed: None,
                    };
                }
                Err(e) => {
                    if current.failed != Some(now) {
                        tracing::warn!(error = %e,
                            "TLS: the certificate or key changed on disk but does not load; \
                             still presenting the previous one");
                        current.failed = Some(now);
                    }
                }
            }
        }
        current.key.clone()
    }
}

impl ResolvesServerCert for FileIdentity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for FileIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The listener's side: we present our certificate and require one from every client,
/// signed by the CA. All three files are re-read when they change ([`FileIdentity`],
/// [`FileCa`]).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let invalid = |reason: String| Error::Invalid {
        what: "server configuration",
        reason,
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(FileCa::load(&files.ca)?)
        .with_cert_resolver(FileIdentity::load(files)?);
    Ok(Arc::new(config))
}

/// The connecting side: the server's certificate must chain to the CA and name the server
/// (checked against the `ServerName` given when connecting); we present ours. All three
/// files are re-read when they change, as in [`server_config`].
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, Error> {
    let invalid = |reason: String| Error::Invalid {
        what: "client configuration",
        reason,
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(FileCa::load(&files.ca)?)
        .with_client_cert_resolver(FileIdentity::load(files)?);
    Ok(Arc::new(config))
}

/// A server name to connect to (`name` is a DNS name or an IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned()).map_err(|_| Error::BadName {
        name: name.to_owned(),
    })
}

/// True when `cert` (already verified against the CA during the handshake) names `name`
/// in its subjectAltName (a DNS name, or an IP address).
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = server_name(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Checks, as a peer's TLS handshake would, that the PEM certificate `cert_pem` chains to a
/// CA in `ca_pem`, is valid now, may be used both as a TLS client and a TLS server, and
/// names `name`. The error says which of these fails.
pub fn verify_issued(cert_pem: &[u8], ca_pem: &[u8], name: &str) -> Result<(), String> {
    let cert = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or("no PEM certificate")?
        .map_err(|e| format!("not a PEM certificate: {e:?}"))?;
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .filter_map(Result::ok)
        .collect();
    if cas.is_empty() {
        return Err("no PEM CA certificate".into());
    }
    let anchors = cas
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unusable CA certificate: {e}"))?;
    let end = webpki::EndEntityCert::try_from(&cert).map_err(|e| format!("{e}"))?;
    let algorithms = provider().signature_verification_algorithms.all;
    let now = rustls_pki_types::UnixTime::now();
    for (usage, what) in [
        (webpki::KeyUsage::client_auth(), "TLS client"),
        (webpki::KeyUsage::server_auth(), "TLS server"),
    ] {
        end.verify_for_usage(algorithms, &anchors, &[], now, usage, None, None)
            .map_err(|e| format!("not valid from this CA as a {what} certificate now: {e}"))?;
    }
    if !certificate_names(&cert, name) {
        return Err(format!("does not name {name:?} in its subjectAltName"));
    }
    Ok(())
}

/// The certificate a TLS client presented to our listener (the first of its chain).
pub fn client_certificate<S>(stream: &server::TlsStream<S>) -> Option<CertificateDer<'static>> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Certificate,
        ca_key: KeyPair,
    }

    impl Pki {
        fn new() -> Pki {
            let ca_key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "switchyard test CA");
            let ca = params.self_signed(&ca_key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            Pki { dir, ca, ca_key }
        }

        fn issue(&self, name: &str) -> TlsFiles {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &self.ca, &self.ca_key)
                .unwrap();
            let (c, k) = (
                self.dir.path().join(format!("{name}.pem")),
                self.dir.path().join(format!("{name}-key.pem")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            TlsFiles {
                ca: self.dir.path().join("ca.pem"),
                certificate: c,
                private_key: k,
            }
        }
    }

    #[tokio::test]
    async fn both_sides_prove_who_they_are_and_the_certificate_names_the_node() {
        let pki = Pki::new();
        let server = server_config(&pki.issue("controller")).unwrap();
        let client = client_config(&pki.issue("node-1")).unwrap();
        let (_, cert) = handshake(server, client).await;
        assert!(certificate_names(&cert, "node-1"));
        assert!(!certificate_names(&cert, "node-2"));
    }

    #[tokio::test]
    async fn a_peer_from_another_ca_or_without_a_certificate_is_refused() {
        let (ours, theirs) = (Pki::new(), Pki::new());
        let server = server_config(&ours.issue("controller")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = TlsAcceptor::from(server.clone());
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        // A client whose certificate another CA signed: the server refuses it (with TLS
        // 1.3 the client learns on its first read).
        let foreign = theirs.issue("node-1");
        let stranger = client_config(&foreign).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ours.issue("x").ca).unwrap())
            .unwrap();
        let stranger_trusting_us = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(
                certificates("certificate", &foreign.certificate).unwrap(),
                private_key(&foreign.private_key).unwrap(),
            )
            .unwrap();
        let no_certificate = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        for (what, config) in [
            ("a stranger's server check", stranger),
            (
                "a certificate from another CA",
                Arc::new(stranger_trusting_us),
            ),
            ("no certificate", Arc::new(no_certificate)),
        ] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let refused = match TlsConnector::from(config)
                .connect(server_name("controller").unwrap(), tcp)
                .await
            {
                Err(_) => true,
                Ok(mut tls) => {
                    let _ = tls.write_all(b"hello").await;
                    let mut buf = [0u8; 1];
                    !matches!(tls.read(&mut buf).await, Ok(1))
                }
            };
            assert!(refused, "{what}: the connection must fail");
        }
    }

    /// Writes `pem` to `path` through a temporary file and a rename, as node-setup and the
    /// controller do.
    fn replace(path: &Path, pem: String) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// One handshake: the certificates each side saw (server's as the client saw it,
    /// client's as the server saw it).
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = TlsAcceptor::from(server).accept(tcp).await.unwrap();
            client_certificate(&tls).unwrap()
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(client)
            .connect(server_name("controller").unwrap(), tcp)
            .await
            .unwrap();
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        (served.into_owned(), accept.await.unwrap())
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_presented_from_the_next_handshake_and_a_half_written_pair_is_not()
     {
        let pki = Pki::new();
        let (controller, node) = (pki.issue("controller"), pki.issue("node-1"));
        let server = server_config(&controller).unwrap();
        let client = client_config(&node).unwrap();
        let (served, presented) = handshake(server.clone(), client.clone()).await;
        assert_eq!(
            served.as_ref(),
            certificates("c", &controller.certificate).unwrap()[0].as_ref()
        );
        // Renewal of both sides, key first: between the two renames the new key does not
        // match the old certificate, and the handshake still succeeds with the old pair.
        let renew = |files: &TlsFiles, name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &pki.ca, &pki.ca_key)
                .unwrap();
            replace(&files.private_key, key.serialize_pem());
            cert
        };
        let new_server = renew(&controller, "controller");
        let new_client = renew(&node, "node-1");
        assert_eq!(
            handshake(server.clone(), client.clone()).await,
            (served.clone(), presented.clone()),
            "a half-written pair must leave the last good one in use"
        );
        replace(&controller.certificate, new_server.pem());
        replace(&node.certificate, new_client.pem());
        let (served_now, presented_now) = handshake(server.clone(), client.clone()).await;
        assert_eq!(served_now.as_ref(), new_server.der().as_ref());
        assert_eq!(presented_now.as_ref(), new_client.der().as_ref());
        assert!(certificate_names(&presented_now, "node-1"));
        // A truncated certificate: the last good pair stays.
        replace(&controller.certificate, String::new());
        assert_eq!(handshake(server, client).await.0, served_now);
    }

    /// Whether a handshake between the two succeeds on both ends.
    async fn handshake_succeeds(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsAcceptor::from(server).accept(tcp).await.is_ok()
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connected = TlsConnector::from(client)
            .connect(server_name("controller").unwrap(), tcp)
            .await
            .is_ok();
        accept.await.unwrap() && connected
    }

    #[tokio::test]
    async fn a_rotated_ca_is_used_from_the_next_handshake_and_a_broken_one_is_not() {
        let (old, new) = (Pki::new(), Pki::new());
        let controller = old.issue("controller");
        // A node whose certificate the new CA signed, trusting (for now) only the new CA.
        let node = new.issue("node-1");
        let server = server_config(&controller).unwrap();
        let client = client_config(&node).unwrap();
        assert!(
            !handshake_succeeds(server.clone(), client.clone()).await,
            "neither side trusts the other's CA yet"
        );
        // Rotation, step one: both sides get the bundle of old and new CA (rename in place,
        // as a Secret update does). Same configurations, no restart.
        let bundle = format!("{}{}", old.ca.pem(), new.ca.pem());
        replace(&controller.ca, bundle.clone());
        replace(&node.ca, bundle);
        assert!(handshake_succeeds(server.clone(), client.clone()).await);
        // A CA file that does not load (truncated): the last good one stays in use.
        replace(&controller.ca, String::new());
        assert!(handshake_succeeds(server.clone(), client.clone()).await);
        // A CA taken out takes effect too: the listener trusts only the old CA again, and
        // the node is refused.
        replace(&controller.ca, old.ca.pem());
        assert!(!handshake_succeeds(server, client).await);
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let pki = Pki::new();
        let mut files = pki.issue("node-1");
        files.private_key = pki.dir.path().join("nope.pem");
        let e = server_config(&files).unwrap_err().to_string();
        assert!(e.contains("private key") && e.contains("nope.pem"), "{e}");
        std::fs::write(pki.dir.path().join("empty.pem"), "").unwrap();
        files = pki.issue("node-1");
        files.ca = pki.dir.path().join("empty.pem");
        let e = client_config(&files).unwrap_err().to_string();
        assert!(
            e.contains("CA certificate") && e.contains("empty.pem"),
            "{e}"
        );
    }
}
