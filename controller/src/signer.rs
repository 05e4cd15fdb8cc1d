//! The node certificate signer: the controller's CA, and the decision on each node's
//! `certificates.k8s.io/v1` CertificateSigningRequest for the signer `switchyard.io/node`.
//!
//! Owns the CA (a `kubernetes.io/tls` Secret, `--ca-secret`, in the controller's namespace:
//! read at start, created by the first replica that finds it missing — `409 AlreadyExists`
//! means another replica won, whose CA is read), the publication of the CA certificate (never
//! its key) in a ConfigMap of the same name, key `ca.crt`, which the nodes read, and the
//! controller's own certificate, issued to itself from the CA at start ([`own_certificate`]).
//!
//! Only the leader decides on requests ([`run`]). A request is approved and signed only if
//! every check of [`decide`] passes: the requester is the node DaemonSet's ServiceAccount;
//! the API server bound the request to exactly one node (`spec.extra` key
//! `authentication.kubernetes.io/node-name`, filled from the pod-bound ServiceAccount token
//! since Kubernetes 1.32) and the CSR's common name and its only DNS subjectAltName are that
//! node; the node exists in the controller's state; the key is ECDSA P-256 and signed the
//! request (proof of possession); the usages are exactly [`NODE_USAGES`]. Otherwise the
//! request gets a `Denied` condition whose reason says which check failed and whose message
//! names both sides. Approval goes through the `/approval` subresource and the certificate
//! through `/status`, as kube-apiserver requires.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::leader::Leadership;
use crate::pkcs10::CertificationRequest;
use crate::source::ClusterState;

/// The signer name the nodes ask for and the controller serves.
pub const SIGNER_NAME: &str = "switchyard.io/node";
/// The `spec.extra` key kube-apiserver fills with the node a pod-bound token belongs to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The usages a node asks for (and the only ones it gets): one certificate serves its
/// ovsdb-server (TLS server), its br-int and its CNI shim (TLS clients).
pub const NODE_USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "client auth",
    "server auth",
];
/// The ConfigMap key holding the CA certificate (PEM).
pub const CA_CONFIG_MAP_KEY: &str = "ca.crt";
/// The common name of the CA Switchyard makes (an issued certificate's issuer).
pub const CA_COMMON_NAME: &str = "switchyard CA";

/// What went wrong in the signer, naming the object and what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// An API call failed.
    #[error("{action}: {source} (see deploy/kubernetes/rbac.yaml for the permissions)")]
    Kube {
        /// What was being done.
        action: String,
        /// kube's error.
        source: kube::Error,
    },
    /// The CA Secret exists but is unusable.
    #[error(
        "the CA Secret {namespace}/{name} is unusable: {reason}; fix or delete it (the controller then makes a new CA, and every node requests a new certificate)"
    )]
    CaSecret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
    /// Writing the controller's own certificate files failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn issue_error(e: rcgen::Error) -> SignerError {
    SignerError::Issue(e.to_string())
}

/// The controller's CA: its key and certificate.
pub struct CertificateAuthority {
    key: KeyPair,
    /// The certificate rebuilt from the key (rcgen signs with an issuer `Certificate`); it has
    /// the published certificate's subject and key, so what it signs chains to that one.
    issuer: rcgen::Certificate,
    /// The certificate as published (PEM).
    pub certificate_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    /// The certificate only: the key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, SignerError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves zeros; rcgen then still writes a valid (if dull) serial.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// A TLS client and server certificate's parameters: DNS names `names` (the common name
/// `first`), IP subjectAltNames `ips`, valid from five minutes ago for `validity`.
fn leaf_params(
    names: &[String],
    first: &str,
    ips: &[IpAddr],
    validity: Duration,
) -> Result<CertificateParams, SignerError> {
    let mut params = CertificateParams::new(names.to_vec()).map_err(issue_error)?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, first);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
    Ok(params)
}

impl CertificateAuthority {
    /// A new CA, valid for ten years.
    pub fn generate() -> Result<CertificateAuthority, SignerError> {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = ca_params()?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let certificate_pem = params.self_signed(&key).map_err(issue_error)?.pem();
        let issuer = ca_params()?.self_signed(&key).map_err(issue_error)?;
        Ok(CertificateAuthority {
            key,
            issuer,
            certificate_pem,
        })
    }

    /// The CA from its PEM certificate and key. Fails unless what this CA issues chains to
    /// that certificate (its subject must be `CN=switchyard CA`: one Switchyard made).
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<CertificateAuthority, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("tls.key: {e}"))?;
        let issuer = ca_params()
            .and_then(|p| p.self_signed(&key).map_err(issue_error))
            .map_err(|e| e.to_string())?;
        let ca = CertificateAuthority {
            key,
            issuer,
            certificate_pem: certificate_pem.to_owned(),
        };
        let probe = KeyPair::generate().map_err(|e| e.to_string())?;
        let (cert, _) = ca
            .issue_for_key(
                "probe",
                &[],
                &NodeKey(probe.public_key_raw().to_vec()),
                Duration::from_secs(600),
            )
            .map(|c| (c, ()))
            .map_err(|e| e.to_string())?;
        switchyard_tls::verify_issued(cert.as_bytes(), certificate_pem.as_bytes(), "probe")
            .map_err(|e| {
                format!(
                    "tls.crt is not the certificate of tls.key with subject CN={CA_COMMON_NAME}: \
                     a certificate it signs {e}"
                )
            })?;
        Ok(ca)
    }

    /// The CA's key (PEM, PKCS#8): what the Secret holds.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `name` (common name and DNS subjectAltName, plus `ips`) for the key
    /// `key`, usable as a TLS client and server, valid from five minutes ago for `validity`.
    fn issue_for_key(
        &self,
        name: &str,
        ips: &[IpAddr],
        key: &NodeKey,
        validity: Duration,
    ) -> Result<String, SignerError> {
        let params = leaf_params(&[name.to_owned()], name, ips, validity)?;
        let cert = params
            .signed_by(key, &self.issuer, &self.key)
            .map_err(issue_error)?;
        Ok(cert.pem())
    }

    /// The certificate of an approved node request (PEM).
    pub fn issue_node(
        &self,
        request: &ApprovedRequest,
        validity: Duration,
    ) -> Result<String, SignerError> {
        self.issue_for_key(
            &request.node,
            &[],
            &NodeKey(request.public_key.clone()),
            validity,
        )
    }
}

/// A requester's ECDSA P-256 public key (the uncompressed point), as rcgen signs for it.
struct NodeKey(Vec<u8>);

impl rcgen::PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Who may ask (`--node-service-account`).
#[derive(Clone, Debug)]
pub struct SignerPolicy {
    /// The username kube-apiserver gives the node DaemonSet's ServiceAccount:
    /// `system:serviceaccount:NAMESPACE:NAME`.
    pub requester: String,
}

/// A request that passed every check: the certificate to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedRequest {
    /// The node: the certificate's common name and only DNS subjectAltName.
    pub node: String,
    /// The node's public key.
    pub public_key: Vec<u8>,
}

/// Why a request is refused: the `Denied` condition's reason ([`Denial::reason`]) and
/// message (the `Display` text, naming both sides of the failed check).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Someone other than the node DaemonSet's ServiceAccount asked.
    #[error(
        "requested by {requester:?}, not by the node DaemonSet's ServiceAccount {expected:?}: only switchyard node-setup in the node DaemonSet may ask for node certificates"
    )]
    WrongRequester {
        /// spec.username.
        requester: String,
        /// What `--node-service-account` says.
        expected: String,
    },
    /// The request is not bound to exactly one node.
    #[error(
        "the API server bound this request to {bound:?} (spec.extra[\"{NODE_NAME_EXTRA}\"]), not to exactly one node: the requester must use a pod-bound ServiceAccount token (the DaemonSet's projected token, Kubernetes >= 1.32)"
    )]
    NotBoundToOneNode {
        /// The values found.
        bound: Vec<String>,
    },
    /// The certificate would name another node than the one the requester runs on.
    #[error(
        "asks for a certificate naming {requested:?} (common name and DNS subjectAltName) but was sent from node {bound:?}: a node may only ask for its own name"
    )]
    NodeNameMismatch {
        /// The node the API server bound the request to.
        bound: String,
        /// What the CSR names (its common name, or its DNS names when they differ).
        requested: String,
    },
    /// The CSR's subject or subjectAltName is not exactly CN=node, DNS=node.
    #[error(
        "from node {bound:?}: the request must have exactly the common name {bound:?} and the one DNS subjectAltName {bound:?}, and nothing else; it has common names {common_names:?}, DNS names {dns_names:?}, {other_names} other subjectAltName(s){}",
        if *other_subject { " and other subject attributes" } else { "" }
    )]
    WrongNames {
        /// The node the API server bound the request to.
        bound: String,
        /// The CSR's common names.
        common_names: Vec<String>,
        /// The CSR's DNS names.
        dns_names: Vec<String>,
        /// How many other subjectAltNames.
        other_names: usize,
        /// Whether the subject has other attributes (O, OU, ...).
        other_subject: bool,
    },
    /// The node does not exist (in the controller's view of the cluster).
    #[error(
        "node {node:?} does not exist in the cluster the controller watches: only existing nodes get certificates (if the node was just added, create a new request)"
    )]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// `spec.request` is no PKCS#10 request.
    #[error("from node {bound:?}: spec.request is unreadable: {reason}")]
    Malformed {
        /// The node the API server bound the request to.
        bound: String,
        /// The parser's words.
        reason: String,
    },
    /// The key is not ECDSA P-256.
    #[error(
        "from node {node:?}: the key is not ECDSA P-256 (algorithm {algorithm:?}, parameters {parameters:?}); switchyard node-setup makes P-256 keys"
    )]
    WrongKey {
        /// The node.
        node: String,
        /// The key's algorithm OID.
        algorithm: Vec<u64>,
        /// Its parameters' OID.
        parameters: Option<Vec<u64>>,
    },
    /// The request is not signed by the key it names (no proof of possession).
    #[error(
        "from node {node:?}: the request's signature does not verify with the public key it holds (signature algorithm {algorithm:?}): it was altered or not made with that key"
    )]
    BadSignature {
        /// The node.
        node: String,
        /// The signature algorithm's OID.
        algorithm: Vec<u64>,
    },
    /// The usages differ from [`NODE_USAGES`].
    #[error(
        "from node {node:?}: asks for the usages {asked:?}; a node certificate has exactly {:?}",
        NODE_USAGES
    )]
    WrongUsages {
        /// The node.
        node: String,
        /// spec.usages.
        asked: Vec<String>,
    },
}

impl Denial {
    /// The condition's `reason` (CamelCase, as Kubernetes reasons are).
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::WrongRequester { .. } => "SwitchyardWrongRequester",
            Denial::NotBoundToOneNode { .. } => "SwitchyardNotBoundToOneNode",
            Denial::NodeNameMismatch { .. } => "SwitchyardNodeNameMismatch",
            Denial::WrongNames { .. } => "SwitchyardWrongNames",
            Denial::UnknownNode { .. } => "SwitchyardUnknownNode",
            Denial::Malformed { .. } => "SwitchyardMalformedRequest",
            Denial::WrongKey { .. } => "SwitchyardWrongKey",
            Denial::BadSignature { .. } => "SwitchyardBadSignature",
            Denial::WrongUsages { .. } => "SwitchyardWrongUsages",
        }
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve it and sign this.
    Approve(ApprovedRequest),
    /// Deny it, for this reason.
    Deny(Denial),
}

/// The decision on one request of signer [`SIGNER_NAME`]: pure, every check in
/// order (see the module documentation). `node_exists` answers from the controller's state.
pub fn decide(
    csr: &CertificateSigningRequest,
    policy: &SignerPolicy,
    node_exists: impl Fn(&str) -> bool,
) -> Decision {
    use Decision::Deny;
    let spec = &csr.spec;
    let requester = spec.username.clone().unwrap_or_default();
    if requester != policy.requester {
        return Deny(Denial::WrongRequester {
            requester,
            expected: policy.requester.clone(),
        });
    }
    let bound: Vec<String> = spec
        .extra
        .as_ref()
        .and_then(|extra| extra.get(NODE_NAME_EXTRA))
        .cloned()
        .unwrap_or_default();
    let [bound] = &bound[..] else {
        return Deny(Denial::NotBoundToOneNode { bound });
    };
    let bound = bound.clone();
    if bound.is_empty() {
        return Deny(Denial::NotBoundToOneNode { bound: vec![bound] });
    }
    let request = match CertificationRequest::from_pem(&spec.request.0) {
        Ok(request) => request,
        Err(e) => {
            return Deny(Denial::Malformed {
                bound,
                reason: e.to_string(),
            });
        }
    };
    if let Some(other) = request
        .common_names
        .iter()
        .chain(&request.dns_names)
        .find(|name| **name != bound)
    {
        return Deny(Denial::NodeNameMismatch {
            bound,
            requested: other.clone(),
        });
    }
    if request.common_names.len() != 1
        || request.dns_names.len() != 1
        || request.other_names != 0
        || request.other_subject_attributes
    {
        return Deny(Denial::WrongNames {
            bound,
            common_names: request.common_names,
            dns_names: request.dns_names,
            other_names: request.other_names,
            other_subject: request.other_subject_attributes,
        });
    }
    let node = bound;
    if !request.key_is_p256() {
        return Deny(Denial::WrongKey {
            node,
            algorithm: request.key_algorithm.0,
            parameters: request.key_algorithm.1,
        });
    }
    if !request.signature_verifies() {
        return Deny(Denial::BadSignature {
            node,
            algorithm: request.signature_algorithm,
        });
    }
    let asked: Vec<String> = spec.usages.clone().unwrap_or_default();
    let asked_set: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    if asked_set != NODE_USAGES.into_iter().collect() || asked.len() != NODE_USAGES.len() {
        return Deny(Denial::WrongUsages { node, asked });
    }
    if !node_exists(&node) {
        return Deny(Denial::UnknownNode { node });
    }
    Decision::Approve(ApprovedRequest {
        node,
        public_key: request.public_key,
    })
}

/// Where the signer keeps its CA and how long certificates live.
#[derive(Clone, Debug)]
pub struct SignerConfig {
    /// The controller's namespace (the CA Secret's and ConfigMap's).
    pub namespace: String,
    /// The CA Secret's and ConfigMap's name (`--ca-secret`).
    pub ca_name: String,
    /// Who may ask.
    pub policy: SignerPolicy,
    /// Validity of node certificates (`--node-certificate-days`): the longest a node gets;
    /// a request's `expirationSeconds` may ask for less.
    pub validity: Duration,
    /// How long a request for a node not (yet) in the controller's state waits for it
    /// before it is denied (`--node-certificate-grace`).
    pub unknown_node_grace: Duration,
}

/// The shortest certificate the signer issues, and the shortest `expirationSeconds` the
/// API server accepts (certificates.k8s.io/v1).
pub const MIN_VALIDITY: Duration = Duration::from_secs(600);

/// How long a certificate for a request asking `requested` seconds (`spec.expirationSeconds`)
/// lives: what it asks, but no longer than `configured` and no shorter than
/// [`MIN_VALIDITY`], as the API documents for signers that honour the field.
pub fn validity_for(configured: Duration, requested: Option<i32>) -> Duration {
    match requested {
        Some(seconds) => Duration::from_secs(seconds.max(0) as u64)
            .max(MIN_VALIDITY)
            .min(configured),
        None => configured,
    }
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> SignerError {
    move |source| SignerError::Kube { action, source }
}

/// The CA from the Secret; when it does not exist, a new one stored there (`409
/// AlreadyExists`: another replica was first, its CA is read). Then the CA certificate is
/// published in the ConfigMap (created, or updated when it holds another).
pub async fn ensure_ca(
    client: Client,
    config: &SignerConfig,
) -> Result<CertificateAuthority, SignerError> {
    crate::source::assert_signer_calls_listed();
    let (ns, name) = (&config.namespace, &config.ca_name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let from_secret = |secret: Secret| -> Result<CertificateAuthority, SignerError> {
        let data = secret.data.unwrap_or_default();
        let field = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .ok_or_else(|| SignerError::CaSecret {
                    namespace: ns.clone(),
                    name: name.clone(),
                    reason: format!("no PEM {key}"),
                })
        };
        CertificateAuthority::from_pem(&field("tls.crt")?, &field("tls.key")?).map_err(|reason| {
            SignerError::CaSecret {
                namespace: ns.clone(),
                name: name.clone(),
                reason,
            }
        })
    };
    let ca = match secrets
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get Secret {ns}/{name}")))?
    {
        Some(secret) => from_secret(secret)?,
        None => {
            let ca = CertificateAuthority::generate()?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/part-of".to_owned(),
                        "switchyard".to_owned(),
                    )])),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".to_owned()),
                data: Some(BTreeMap::from([
                    (
                        "tls.crt".to_owned(),
                        ByteString(ca.certificate_pem.clone().into_bytes()),
                    ),
                    ("tls.key".to_owned(), ByteString(ca.key_pem().into_bytes())),
                ])),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    info!(secret = %format!("{ns}/{name}"), "node certificates: created a new CA");
                    ca
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    let secret = secrets
                        .get(name)
                        .await
                        .map_err(kube_error(format!("get Secret {ns}/{name}")))?;
                    from_secret(secret)?
                }
                Err(e) => return Err(kube_error(format!("create Secret {ns}/{name}"))(e)),
            }
        }
    };
    publish_ca(client, config, &ca.certificate_pem).await?;
    Ok(ca)
}

async fn publish_ca(
    client: Client,
    config: &SignerConfig,
    certificate_pem: &str,
) -> Result<(), SignerError> {
    let (ns, name) = (&config.namespace, &config.ca_name);
    let maps: Api<ConfigMap> = Api::namespaced(client, ns);
    let data = BTreeMap::from([(CA_CONFIG_MAP_KEY.to_owned(), certificate_pem.to_owned())]);
    match maps
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get ConfigMap {ns}/{name}")))?
    {
        Some(map) if map.data.as_ref() == Some(&data) => Ok(()),
        Some(mut map) => {
            warn!(configmap = %format!("{ns}/{name}"), "node certificates: the published CA \
                differs from the CA Secret's; publishing the Secret's (nodes renew their \
                certificates at their next check)");
            map.data = Some(data);
            maps.replace(name, &PostParams::default(), &map)
                .await
                .map(|_| ())
                .map_err(kube_error(format!("update ConfigMap {ns}/{name}")))
        }
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/part-of".to_owned(),
                        "switchyard".to_owned(),
                    )])),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            match maps.create(&PostParams::default(), &map).await {
                Ok(_) => Ok(()),
                // Another replica published it at the same moment (the same CA: it read the
                // same Secret).
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
                Err(e) => Err(kube_error(format!("create ConfigMap {ns}/{name}"))(e)),
            }
        }
    }
}

/// The controller's own TLS identity, issued from the CA: `names` (DNS, e.g.
/// `switchyard-controller.switchyard.svc`) and `ips` (the pod IP), written into `dir` as
/// `ca.crt`, `tls.crt` and `tls.key` (0600). Returns the three paths.
pub fn own_certificate(
    ca: &CertificateAuthority,
    names: &[String],
    ips: &[IpAddr],
    validity: Duration,
    dir: &Path,
) -> Result<switchyard_tls::TlsFiles, SignerError> {
    let key = KeyPair::generate().map_err(issue_error)?;
    let first = names
        .first()
        .ok_or_else(|| SignerError::Issue("no name for the controller's certificate".into()))?;
    let params = leaf_params(names, first, ips, validity)?;
    let cert = params
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(issue_error)?;
    std::fs::create_dir_all(dir).map_err(|source| SignerError::Write {
        path: dir.into(),
        source,
    })?;
    let files = crate::node_certificate::files(dir);
    crate::node_certificate::write_identity(
        dir,
        key.serialize_pem(),
        cert.pem(),
        ca.certificate_pem.clone(),
    )
    .map_err(|(path, source)| SignerError::Write { path, source })?;
    Ok(files)
}

/// Issues the controller's own certificate in `dir` again when it is due (in the last third
/// of its life, or the files are missing, damaged or not the CA's): why, or `None` when it
/// is good. The listeners and OVSDB clients present the new one from their next handshake
/// (switchyard_tls re-reads changed files); connections already up keep the old one.
pub fn renew_own_certificate(
    ca: &CertificateAuthority,
    names: &[String],
    ips: &[IpAddr],
    validity: Duration,
    dir: &Path,
) -> Result<Option<String>, SignerError> {
    let name = names
        .first()
        .ok_or_else(|| SignerError::Issue("no name for the controller's certificate".into()))?;
    let Some(why) =
        crate::node_certificate::needs_renewal(dir, ca.certificate_pem.as_bytes(), name)
    else {
        return Ok(None);
    };
    own_certificate(ca, names, ips, validity, dir)?;
    Ok(Some(why))
}

/// Runs [`renew_own_certificate`] every `every`, until the process stops; a failure is
/// logged and tried again at the next round.
pub async fn keep_own_certificate(
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    validity: Duration,
    dir: PathBuf,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match renew_own_certificate(&ca, &names, &ips, validity, &dir) {
            Ok(None) => {}
            Ok(Some(why)) => info!(%why, dir = %dir.display(),
                "node certificates: renewed this controller's own certificate"),
            Err(e) => warn!(error = %e, dir = %dir.display(),
                "node certificates: cannot renew this controller's own certificate; \
                 trying again at the next round"),
        }
    }
}

fn condition(type_: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// What [`handle`] did with one request.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    /// Nothing to do (another signer's, already decided and signed).
    Done,
    /// Approved and signed for the node.
    Signed(String),
    /// Denied.
    Denied,
    /// The node is not in the state yet: try again later.
    WaitForNode,
}

async fn handle(
    api: &Api<CertificateSigningRequest>,
    ca: &CertificateAuthority,
    config: &SignerConfig,
    state: &ClusterState,
    mut csr: CertificateSigningRequest,
) -> Result<Handled, SignerError> {
    if csr.spec.signer_name != SIGNER_NAME {
        return Ok(Handled::Done);
    }
    let name = csr.name_any();
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if signed || has_condition(&csr, "Denied") || has_condition(&csr, "Failed") {
        return Ok(Handled::Done);
    }
    let approved = has_condition(&csr, "Approved");
    let decision = decide(&csr, &config.policy, |node| state.nodes.contains_key(node));
    match decision {
        Decision::Deny(Denial::UnknownNode { .. })
            if age(&csr).is_some_and(|a| a < config.unknown_node_grace) =>
        {
            Ok(Handled::WaitForNode)
        }
        Decision::Deny(denial) => {
            warn!(csr = %name, reason = denial.reason(), message = %denial,
                "node certificates: denied a certificate request");
            let status = csr.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            if approved {
                // Someone approved it (kubectl certificate approve), but the signer refuses:
                // a Failed condition, through /status.
                conditions.push(condition("Failed", denial.reason(), denial.to_string()));
                api.replace_status(&name, &PostParams::default(), &csr)
                    .await
                    .map_err(kube_error(format!(
                        "mark CertificateSigningRequest {name} Failed"
                    )))?;
            } else {
                conditions.push(condition("Denied", denial.reason(), denial.to_string()));
                replace_approval(api, &name, &csr).await?;
            }
            Ok(Handled::Denied)
        }
        Decision::Approve(request) => {
            if !approved {
                let status = csr.status.get_or_insert_with(Default::default);
                status
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(condition(
                        "Approved",
                        "SwitchyardNodeCertificate",
                        format!(
                            "node {:?}: requester, node binding, names, key, signature and usages checked by the switchyard controller",
                            request.node
                        ),
                    ));
                csr = replace_approval(api, &name, &csr).await?;
            }
            let validity = validity_for(config.validity, csr.spec.expiration_seconds);
            let certificate = ca.issue_node(&request, validity)?;
            let status = csr
                .status
                .get_or_insert_with(CertificateSigningRequestStatus::default);
            status.certificate = Some(ByteString(certificate.into_bytes()));
            api.replace_status(&name, &PostParams::default(), &csr)
                .await
                .map_err(kube_error(format!(
                    "write the certificate of CertificateSigningRequest {name} (/status)"
                )))?;
            info!(csr = %name, node = %request.node, validity_seconds = validity.as_secs(),
                "node certificates: approved and signed");
            Ok(Handled::Signed(request.node))
        }
    }
}

fn age(csr: &CertificateSigningRequest) -> Option<Duration> {
    let created = csr.metadata.creation_timestamp.as_ref()?.0;
    let age = Timestamp::now().as_millisecond() - created.as_millisecond();
    Some(Duration::from_millis(age.max(0) as u64))
}

async fn replace_approval(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    csr: &CertificateSigningRequest,
) -> Result<CertificateSigningRequest, SignerError> {
    api.replace_subresource("approval", name, &PostParams::default(), csr)
        .await
        .map_err(kube_error(format!(
            "approve or deny CertificateSigningRequest {name} (/approval)"
        )))
}

/// Decides on every request of [`SIGNER_NAME`] while this replica leads; runs until the
/// process stops. A failed write is retried when the request changes, when the
/// controller's state changes, and every few seconds.
pub async fn run(
    client: Client,
    ca: Arc<CertificateAuthority>,
    config: SignerConfig,
    mut leadership: watch::Receiver<Leadership>,
    mut state: watch::Receiver<Arc<ClusterState>>,
) {
    crate::source::assert_signer_calls_listed();
    let api: Api<CertificateSigningRequest> = Api::all(client);
    loop {
        // Standby: wait to lead.
        while !leadership.borrow_and_update().leader {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        info!(
            signer = SIGNER_NAME,
            "node certificates: this replica signs"
        );
        let selector = format!("spec.signerName={SIGNER_NAME}");
        let events = watcher(api.clone(), watcher::Config::default().fields(&selector));
        let mut events = std::pin::pin!(events);
        // Requests not settled yet (waiting for their node, or a failed write).
        let mut unsettled: BTreeMap<String, CertificateSigningRequest> = BTreeMap::new();
        // Requests settled in this term: the watch still brings their intermediate versions
        // (approved, not yet signed), which must not be signed twice.
        let mut settled: BTreeSet<String> = BTreeSet::new();
        let mut last_error: Option<String> = None;
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        loop {
            let mut batch: Vec<CertificateSigningRequest> = Vec::new();
            tokio::select! {
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !leadership.borrow().leader {
                        info!("node certificates: standby; no longer signing");
                        break;
                    }
                }
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr))) => {
                        batch.push(csr)
                    }
                    Some(Ok(watcher::Event::Delete(csr))) => {
                        unsettled.remove(&csr.name_any());
                        settled.remove(&csr.name_any());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let e = e.to_string();
                        if last_error.as_ref() != Some(&e) {
                            warn!(error = %e, "node certificates: cannot list or watch \
                                CertificateSigningRequests");
                            last_error = Some(e);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => break,
                },
                Ok(()) = state.changed() => batch.extend(std::mem::take(&mut unsettled).into_values()),
                _ = retry.tick() => batch.extend(std::mem::take(&mut unsettled).into_values()),
            }
            for csr in batch {
                let name = csr.name_any();
                unsettled.remove(&name);
                if settled.contains(&name) {
                    continue;
                }
                let snapshot = state.borrow().clone();
                match handle(&api, &ca, &config, &snapshot, csr.clone()).await {
                    Ok(Handled::WaitForNode) => {
                        unsettled.insert(name, csr);
                    }
                    Ok(Handled::Signed(_) | Handled::Denied) => {
                        settled.insert(name);
                    }
                    Ok(Handled::Done) => {}
                    // 409: the request changed; its new version comes through the watch.
                    Err(SignerError::Kube {
                        source: kube::Error::Api(s),
                        ..
                    }) if s.is_conflict() => {}
                    Err(e) => {
                        warn!(csr = %name, error = %e, "node certificates: cannot settle a \
                            certificate request; retrying");
                        unsettled.insert(name, csr);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    const NODE_SA: &str = "system:serviceaccount:switchyard:switchyard-node";

    fn policy() -> SignerPolicy {
        SignerPolicy {
            requester: NODE_SA.to_owned(),
        }
    }

    fn pem_request(cn: &str, sans: &[&str], key: &KeyPair) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn csr(request: Vec<u8>, bound: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("switchyard-node-n1-abcd".into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(request),
                signer_name: SIGNER_NAME.into(),
                usages: Some(NODE_USAGES.iter().map(|s| s.to_string()).collect()),
                username: Some(NODE_SA.into()),
                extra: Some(BTreeMap::from([(
                    NODE_NAME_EXTRA.to_owned(),
                    bound.iter().map(|s| s.to_string()).collect(),
                )])),
                ..Default::default()
            },
            status: None,
        }
    }

    fn good(node: &str) -> (KeyPair, CertificateSigningRequest) {
        let key = KeyPair::generate().unwrap();
        let request = pem_request(node, &[node], &key);
        (key, csr(request, &[node]))
    }

    fn known(node: &str) -> bool {
        node == "n1" || node == "n2"
    }

    fn denial(csr: &CertificateSigningRequest) -> Denial {
        match decide(csr, &policy(), known) {
            Decision::Deny(d) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn a_node_asking_for_its_own_name_is_approved_and_the_certificate_chains_to_the_ca() {
        let (key, csr) = good("n1");
        let Decision::Approve(approved) = decide(&csr, &policy(), known) else {
            panic!("not approved");
        };
        assert_eq!(approved.node, "n1");
        assert_eq!(approved.public_key, key.public_key_raw());
        let ca = CertificateAuthority::generate().unwrap();
        let pem = ca.issue_node(&approved, Duration::from_secs(3600)).unwrap();
        switchyard_tls::verify_issued(pem.as_bytes(), ca.certificate_pem.as_bytes(), "n1").unwrap();
        assert!(
            switchyard_tls::verify_issued(pem.as_bytes(), ca.certificate_pem.as_bytes(), "n2")
                .is_err()
        );
        let facts = crate::pkcs10::certificate_facts(pem.as_bytes()).unwrap();
        assert_eq!(facts.public_key, key.public_key_raw());
        // A CA read back from its PEM signs certificates that chain to the same certificate.
        let again = CertificateAuthority::from_pem(&ca.certificate_pem, &ca.key_pem()).unwrap();
        let pem = again
            .issue_node(&approved, Duration::from_secs(3600))
            .unwrap();
        switchyard_tls::verify_issued(pem.as_bytes(), ca.certificate_pem.as_bytes(), "n1").unwrap();
    }

    #[test]
    fn the_controllers_own_certificate_is_renewed_in_its_last_third_only() {
        let ca = CertificateAuthority::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let names = vec!["switchyard-controller.switchyard.svc".to_owned()];
        let hour = Duration::from_secs(3600);
        // Nothing there yet: issued.
        let why = renew_own_certificate(&ca, &names, &[], hour, dir.path()).unwrap();
        assert!(why.unwrap().contains("tls.crt"));
        let first = std::fs::read(&cert).unwrap();
        // Fresh: left alone.
        assert_eq!(
            renew_own_certificate(&ca, &names, &[], hour, dir.path()).unwrap(),
            None
        );
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        // 60 s, back-dated five minutes: past two thirds of its life already.
        own_certificate(&ca, &names, &[], Duration::from_secs(60), dir.path()).unwrap();
        let short = std::fs::read(&cert).unwrap();
        let why = renew_own_certificate(&ca, &names, &[], hour, dir.path())
            .unwrap()
            .unwrap();
        assert!(why.contains("last third"), "{why}");
        let renewed = std::fs::read(&cert).unwrap();
        assert_ne!(renewed, short);
        switchyard_tls::verify_issued(&renewed, ca.certificate_pem.as_bytes(), &names[0]).unwrap();
        // Another CA now (the Secret replaced): renewed from it.
        let other = CertificateAuthority::generate().unwrap();
        let why = renew_own_certificate(&other, &names, &[], hour, dir.path())
            .unwrap()
            .unwrap();
        assert!(why.contains("not the published CA"), "{why}");
    }

    #[test]
    fn expiration_seconds_shortens_the_certificate_within_bounds() {
        let year = Duration::from_secs(365 * 86400);
        assert_eq!(validity_for(year, None), year);
        assert_eq!(validity_for(year, Some(3600)), Duration::from_secs(3600));
        // Below the API's minimum, or nonsense: the minimum.
        assert_eq!(validity_for(year, Some(60)), MIN_VALIDITY);
        assert_eq!(validity_for(year, Some(-5)), MIN_VALIDITY);
        // Never longer than the operator allows.
        assert_eq!(validity_for(year, Some(i32::MAX)), year);
        assert_eq!(
            validity_for(Duration::from_secs(86400), Some(2 * 86400)),
            Duration::from_secs(86400)
        );
        // The issued certificate carries it: notAfter - notBefore = validity + the five
        // minutes of back-dating.
        let (_, csr) = good("n1");
        let Decision::Approve(approved) = decide(&csr, &policy(), known) else {
            panic!("not approved");
        };
        let ca = CertificateAuthority::generate().unwrap();
        let pem = ca
            .issue_node(&approved, validity_for(year, Some(3600)))
            .unwrap();
        let facts = crate::pkcs10::certificate_facts(pem.as_bytes()).unwrap();
        assert_eq!(
            (facts.not_after - facts.not_before).whole_seconds(),
            3600 + 300
        );
    }

    #[test]
    fn a_ca_certificate_that_is_not_the_keys_is_refused() {
        let (one, two) = (
            CertificateAuthority::generate().unwrap(),
            CertificateAuthority::generate().unwrap(),
        );
        let e = CertificateAuthority::from_pem(&one.certificate_pem, &two.key_pem()).unwrap_err();
        assert!(e.contains("tls.crt"), "{e}");
    }

    #[test]
    fn another_nodes_name_is_denied_naming_both() {
        let key = KeyPair::generate().unwrap();
        let d = denial(&csr(pem_request("n2", &["n2"], &key), &["n1"]));
        assert_eq!(
            d,
            Denial::NodeNameMismatch {
                bound: "n1".into(),
                requested: "n2".into()
            }
        );
        let message = d.to_string();
        assert!(
            message.contains("\"n1\"") && message.contains("\"n2\""),
            "{message}"
        );
        // The right CN with another node in the subjectAltName.
        let d = denial(&csr(pem_request("n1", &["n1", "n2"], &key), &["n1"]));
        assert_eq!(d.reason(), "SwitchyardNodeNameMismatch", "{d}");
    }

    #[test]
    fn extra_names_are_denied() {
        let key = KeyPair::generate().unwrap();
        let d = denial(&csr(pem_request("n1", &["n1", "10.0.0.1"], &key), &["n1"]));
        assert_eq!(d.reason(), "SwitchyardWrongNames", "{d}");
        let d = denial(&csr(pem_request("n1", &[], &key), &["n1"]));
        assert_eq!(d.reason(), "SwitchyardWrongNames", "{d}");
    }

    #[test]
    fn an_unknown_node_is_denied() {
        let (_, csr) = good("n9");
        assert_eq!(denial(&csr), Denial::UnknownNode { node: "n9".into() });
    }

    #[test]
    fn another_requester_is_denied() {
        let (_, mut csr) = good("n1");
        csr.spec.username = Some("system:serviceaccount:default:intruder".into());
        let d = denial(&csr);
        assert_eq!(d.reason(), "SwitchyardWrongRequester");
        assert!(d.to_string().contains("intruder") && d.to_string().contains(NODE_SA));
        csr.spec.username = None;
        assert_eq!(denial(&csr).reason(), "SwitchyardWrongRequester");
    }

    #[test]
    fn a_request_not_bound_to_exactly_one_node_is_denied() {
        let (_, mut csr) = good("n1");
        csr.spec.extra = None;
        assert_eq!(
            denial(&csr),
            Denial::NotBoundToOneNode { bound: Vec::new() }
        );
        csr.spec.extra = Some(BTreeMap::from([(
            NODE_NAME_EXTRA.to_owned(),
            vec!["n1".to_owned(), "n2".to_owned()],
        )]));
        assert_eq!(denial(&csr).reason(), "SwitchyardNotBoundToOneNode");
    }

    #[test]
    fn a_bad_signature_is_denied() {
        let (_, csr) = good("n1");
        // Swap in another key's request info signature: sign n1's request with key A, then
        // replace the key inside by rebuilding with key B but keeping A's signature.
        let pem = String::from_utf8(csr.spec.request.0.clone()).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut der = crate::pkcs10::base64_decode(&b64).unwrap();
        // Flip a bit in the last byte of the signature.
        let last = der.len() - 1;
        der[last] ^= 1;
        let mut tampered = csr.clone();
        tampered.spec.request = ByteString(to_pem(&der).into_bytes());
        let d = denial(&tampered);
        assert_eq!(d.reason(), "SwitchyardBadSignature", "{d}");
    }

    fn to_pem(der: &[u8]) -> String {
        // A ByteString serialises as base64, as the API carries it.
        let b64 = serde_json::to_value(ByteString(der.to_vec())).expect("base64");
        let b64 = b64.as_str().expect("a string");
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    }

    #[test]
    fn other_usages_are_denied() {
        let (_, mut csr) = good("n1");
        csr.spec
            .usages
            .as_mut()
            .unwrap()
            .push("code signing".into());
        let d = denial(&csr);
        assert_eq!(d.reason(), "SwitchyardWrongUsages");
        assert!(d.to_string().contains("code signing"), "{d}");
        csr.spec.usages = Some(vec!["client auth".into()]);
        assert_eq!(denial(&csr).reason(), "SwitchyardWrongUsages");
    }

    #[test]
    fn a_key_other_than_p256_is_denied() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let d = denial(&csr(pem_request("n1", &["n1"], &key), &["n1"]));
        assert_eq!(d.reason(), "SwitchyardWrongKey", "{d}");
    }

    #[test]
    fn garbage_is_denied_as_malformed() {
        let d = denial(&csr(b"not a request".to_vec(), &["n1"]));
        assert_eq!(d.reason(), "SwitchyardMalformedRequest", "{d}");
    }
}
