//! A node's certificate, asked of the controller through the Kubernetes CSR API:
//! `switchyard node-setup --request-certificate` (the node DaemonSet runs it before anything
//! else, and again at every `--reapply-every` round, which renews the certificate).
//!
//! The directory (`--certificates-dir`, e.g. /etc/switchyard/tls) holds `tls.key` (0600),
//! `tls.crt` and `ca.crt`: what ovs-vswitchd and ovsdb-server use (`ovs-vsctl set-ssl`) and
//! what the CNI shim's conflist `tls` names. When it holds no certificate that chains to the
//! CA the controller publishes (ConfigMap `switchyard-ca`, key `ca.crt`), names this node,
//! matches the key and is not in the last third of its life, a new ECDSA P-256 key is made
//! here (it never leaves the node), a PKCS#10 request with CN and DNS subjectAltName = the
//! node name is sent as a `certificates.k8s.io/v1` CertificateSigningRequest of signer
//! `switchyard.io/node`, and once the controller has signed it the three files are replaced
//! together ([`write_identity`]: one rename switches all three). Otherwise nothing changes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::signer::{CA_CONFIG_MAP_KEY, NODE_USAGES, SIGNER_NAME};

/// What went wrong getting this node's certificate; each message names the object and what
/// the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum NodeCertificateError {
    /// An API call failed.
    #[error("{action}: {source} (the node's RBAC is in deploy/kubernetes/rbac.yaml)")]
    Kube {
        /// What was being done.
        action: String,
        /// kube's error.
        source: kube::Error,
    },
    /// The CA ConfigMap has no CA certificate.
    #[error(
        "the ConfigMap {namespace}/{name} has no PEM {CA_CONFIG_MAP_KEY}: the controller publishes it at start; is it running?"
    )]
    NoCa {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The request was denied or failed.
    #[error(
        "the CertificateSigningRequest {csr} was {condition}: {reason}: {message} (see docs/operations.md, \"Node certificates\")"
    )]
    Refused {
        /// The request's name.
        csr: String,
        /// "Denied" or "Failed".
        condition: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// Nobody signed the request in time.
    #[error(
        "the CertificateSigningRequest {csr} was not signed within {waited:?}: is the switchyard controller running and leading (its log says \"node certificates\")? `kubectl get csr {csr}` shows its state"
    )]
    Timeout {
        /// The request's name.
        csr: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The signed certificate is not what was asked.
    #[error("the certificate issued for CertificateSigningRequest {csr} is unusable: {reason}")]
    BadCertificate {
        /// The request's name.
        csr: String,
        /// Why.
        reason: String,
    },
    /// Making the key or request failed.
    #[error("cannot make a key and certificate request: {0}")]
    Generate(String),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where to ask and where to keep the result.
#[derive(Clone, Debug)]
pub struct NodeCertificateConfig {
    /// This node's name.
    pub node: String,
    /// The directory of `tls.key`, `tls.crt`, `ca.crt`.
    pub dir: PathBuf,
    /// The namespace of the CA ConfigMap (the controller's).
    pub ca_namespace: String,
    /// The CA ConfigMap's name.
    pub ca_name: String,
    /// How long to wait for the signature.
    pub timeout: Duration,
}

/// What [`ensure`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The certificate in the directory is good.
    Unchanged,
    /// A new certificate was written (the request's name).
    Issued(String),
}

/// The three files in `dir`.
pub fn files(dir: &Path) -> switchyard_tls::TlsFiles {
    switchyard_tls::TlsFiles {
        ca: dir.join("ca.crt"),
        certificate: dir.join("tls.crt"),
        private_key: dir.join("tls.key"),
    }
}

/// Why the directory's certificate needs replacing, or `None` if it is good.
pub fn needs_renewal(dir: &Path, ca_pem: &[u8], node: &str) -> Option<String> {
    let files = files(dir);
    let cert = match std::fs::read(&files.certificate) {
        Ok(c) => c,
        Err(e) => return Some(format!("{}: {e}", files.certificate.display())),
    };
    let key = match std::fs::read_to_string(&files.private_key)
        .map_err(|e| e.to_string())
        .and_then(|k| KeyPair::from_pem(&k).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => return Some(format!("{}: {e}", files.private_key.display())),
    };
    if std::fs::read(&files.ca).ok().as_deref() != Some(ca_pem) {
        return Some(format!("{} is not the published CA", files.ca.display()));
    }
    if let Err(e) = switchyard_tls::verify_issued(&cert, ca_pem, node) {
        return Some(format!("{}: {e}", files.certificate.display()));
    }
    let facts = match crate::pkcs10::certificate_facts(&cert) {
        Ok(f) => f,
        Err(e) => return Some(format!("{}: {e}", files.certificate.display())),
    };
    if facts.public_key != key.public_key_raw() {
        return Some(format!(
            "{} is not the certificate of {}",
            files.certificate.display(),
            files.private_key.display()
        ));
    }
    let life = facts.not_after - facts.not_before;
    let renew_at = facts.not_after - life / 3;
    if time::OffsetDateTime::now_utc() >= renew_at {
        return Some(format!(
            "{} expires at {} (renewed in the last third of its life)",
            files.certificate.display(),
            facts.not_after
        ));
    }
    None
}

/// The request's name: `switchyard-node-NODE-HASH`, HASH the first 8 bytes of the public
/// key's SHA-256 in hex (a new key, a new request; the same key, the same name).
pub fn request_name(node: &str, public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    let hash: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // A name is at most 253 characters (a DNS subdomain) and a node name may be as long:
    // the node part is cut, the key hash keeps the name unique. A cut that ends on a '.'
    // or '-' would leave an empty or odd label: those are trimmed too.
    let room = 253 - "switchyard-node-".len() - 1 - hash.len();
    let node = node[..node.len().min(room)].trim_end_matches(['.', '-']);
    format!("switchyard-node-{node}-{hash}")
}

/// The request's labels: `switchyard.io/node` only when the node name fits a label value
/// (at most 63 characters; a node name may have 253).
pub fn request_labels(node: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([(
        "app.kubernetes.io/part-of".to_owned(),
        "switchyard".to_owned(),
    )]);
    if node.len() <= 63 {
        labels.insert("switchyard.io/node".to_owned(), node.to_owned());
    }
    labels
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> NodeCertificateError {
    move |source| NodeCertificateError::Kube { action, source }
}

/// Makes sure `config.dir` holds a good certificate for the node (see the module
/// documentation). Idempotent.
pub async fn ensure(
    client: Client,
    config: &NodeCertificateConfig,
) -> Result<Outcome, NodeCertificateError> {
    crate::source::assert_node_certificate_calls_listed();
    let (ns, name) = (&config.ca_namespace, &config.ca_name);
    // The controller publishes the CA at its start: a node that starts first waits for it.
    let started = Instant::now();
    let map = loop {
        match Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(name)
            .await
        {
            Ok(map) => break map,
            Err(kube::Error::Api(s)) if s.is_not_found() && started.elapsed() < config.timeout => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(kube_error(format!("get ConfigMap {ns}/{name} (the CA)"))(e)),
        }
    };
    let ca_pem = map
        .data
        .and_then(|mut d| d.remove(CA_CONFIG_MAP_KEY))
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| NodeCertificateError::NoCa {
            namespace: ns.clone(),
            name: name.clone(),
        })?;
    let Some(why) = needs_renewal(&config.dir, ca_pem.as_bytes(), &config.node) else {
        return Ok(Outcome::Unchanged);
    };
    tracing::info!(node = %config.node, reason = %why, "node certificate: requesting a new one");
    let generate = |e: rcgen::Error| NodeCertificateError::Generate(e.to_string());
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::new(vec![config.node.clone()]).map_err(generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, config.node.clone());
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(generate)?;
    let csr_name = request_name(&config.node, key.public_key_raw());
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(csr_name.clone()),
            labels: Some(request_labels(&config.node)),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: SIGNER_NAME.to_owned(),
            usages: Some(NODE_USAGES.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    match api.create(&PostParams::default(), &csr).await {
        Ok(_) => {}
        // The same key made the same name: ours.
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => {
            return Err(kube_error(format!(
                "create CertificateSigningRequest {csr_name}"
            ))(e));
        }
    }
    let started = Instant::now();
    let certificate = loop {
        let csr = api.get(&csr_name).await.map_err(kube_error(format!(
            "get CertificateSigningRequest {csr_name}"
        )))?;
        let status = csr.status.unwrap_or_default();
        if let Some(refused) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(NodeCertificateError::Refused {
                csr: csr_name,
                condition: refused.type_.clone(),
                reason: refused.reason.clone().unwrap_or_default(),
                message: refused.message.clone().unwrap_or_default(),
            });
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break cert.0;
        }
        if started.elapsed() >= config.timeout {
            return Err(NodeCertificateError::Timeout {
                csr: csr_name,
                waited: config.timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let bad = |reason: String| NodeCertificateError::BadCertificate {
        csr: csr_name.clone(),
        reason,
    };
    switchyard_tls::verify_issued(&certificate, ca_pem.as_bytes(), &config.node).map_err(bad)?;
    let facts = crate::pkcs10::certificate_facts(&certificate).map_err(|e| bad(e.to_string()))?;
    if facts.public_key != key.public_key_raw() {
        return Err(bad("it is not for this node's key".into()));
    }
    std::fs::create_dir_all(&config.dir).map_err(|source| NodeCertificateError::Write {
        path: config.dir.clone(),
        source,
    })?;
    let certificate = String::from_utf8(certificate).map_err(|_| bad("not PEM".into()))?;
    write_identity(&config.dir, key.serialize_pem(), certificate, ca_pem)
        .map_err(|(path, source)| NodeCertificateError::Write { path, source })?;
    Ok(Outcome::Issued(csr_name))
}

/// The link in an identity directory naming its current set of files (`..data` → `..N`,
/// the layout kubelet gives a Secret volume).
const DATA_LINK: &str = "..data";

/// Writes a key, its certificate and the CA into `dir` so that a reader sees either the
/// old three or the new three, never a new key with the old certificate: the files go into
/// a new hidden directory `..N` (synced), the link `..data` is switched to it by one rename,
/// and `tls.key`, `tls.crt`, `ca.crt` are links to `..data/NAME` (a regular file from an
/// older layout is replaced by its link, by a rename too). Older `..N` directories are
/// removed afterwards. The names readers use (`files`) do not change.
pub fn write_identity(
    dir: &Path,
    key_pem: String,
    certificate_pem: String,
    ca_pem: String,
) -> Result<(), (PathBuf, std::io::Error)> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |e| (path, e)
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let data = format!("..{stamp}");
    let data_dir = dir.join(&data);
    std::fs::create_dir(&data_dir).map_err(at(&data_dir))?;
    let names = files(Path::new(""));
    for (name, contents, mode) in [
        (&names.private_key, key_pem, 0o600),
        (&names.certificate, certificate_pem, 0o644),
        (&names.ca, ca_pem, 0o644),
    ] {
        write_atomically(&data_dir.join(name), contents, mode)?;
    }
    std::fs::File::open(&data_dir)
        .and_then(|d| d.sync_all())
        .map_err(at(&data_dir))?;
    replace_with_link(&dir.join(DATA_LINK), Path::new(&data))?;
    for name in [&names.private_key, &names.certificate, &names.ca] {
        let path = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if std::fs::read_link(&path).ok().as_deref() != Some(target.as_path()) {
            replace_with_link(&path, &target)?;
        }
    }
    // What no link names any more.
    for entry in std::fs::read_dir(dir).map_err(at(dir))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_data_dir = name.len() > 2
            && name.starts_with("..")
            && name[2..].bytes().all(|b| b.is_ascii_digit());
        if is_data_dir && name != data {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Makes `path` a symbolic link to `target` by creating it beside and renaming it over
/// `path` (atomic: a reader finds the old file or link, or the new link).
fn replace_with_link(path: &Path, target: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    // Beside `path` under its whole name plus a suffix (`with_extension` would turn
    // `..data` into `..`).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".link-tmp");
    let tmp = PathBuf::from(tmp);
    let fail = |e| (path.to_path_buf(), e);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Writes `contents` to `path` through a temporary file in the same directory (created
/// with `mode`, synced) and a rename: a reader sees the old file or the new, never a part.
pub fn write_atomically(
    path: &Path,
    contents: String,
    mode: u32,
) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let fail = |e| (path.to_path_buf(), e);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_node_name_still_makes_a_valid_request_name_and_labels() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // 250 characters, with a '.' where the cut falls.
        let node = format!("{}.{}.{}", "n".repeat(63), "m".repeat(155), "k".repeat(30));
        assert_eq!(node.len(), 250);
        let name = request_name(&node, key.public_key_raw());
        assert!(name.len() <= 253, "{}", name.len());
        let kept = format!("switchyard-node-{}.{}-", "n".repeat(63), "m".repeat(155));
        assert!(name.starts_with(&kept), "the cut '.' is trimmed: {name}");
        assert!(!name.contains(".-"), "{name}");
        assert_ne!(
            name,
            request_name(
                &node,
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .unwrap()
                    .public_key_raw()
            )
        );
        assert!(!request_labels(&node).contains_key("switchyard.io/node"));
        assert_eq!(
            request_labels("n1")
                .get("switchyard.io/node")
                .map(String::as_str),
            Some("n1")
        );
        assert_eq!(
            request_name("n1", key.public_key_raw()).len(),
            "switchyard-node-n1-".len() + 16
        );
    }

    #[test]
    fn the_request_name_follows_the_key() {
        let (a, b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let name = request_name("n1", a.public_key_raw());
        assert!(name.starts_with("switchyard-node-n1-"), "{name}");
        assert_eq!(name.len(), "switchyard-node-n1-".len() + 16);
        assert_eq!(name, request_name("n1", a.public_key_raw()));
        assert_ne!(name, request_name("n1", b.public_key_raw()));
    }

    #[test]
    fn a_missing_foreign_or_ageing_certificate_needs_renewal() {
        use crate::signer::{ApprovedRequest, CertificateAuthority};
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate().unwrap();
        let ca_pem = ca.certificate_pem.as_bytes();
        assert!(needs_renewal(dir.path(), ca_pem, "n1").is_some());
        let key = KeyPair::generate().unwrap();
        let write = |validity: Duration| {
            let cert = ca
                .issue_node(
                    &ApprovedRequest {
                        node: "n1".into(),
                        public_key: key.public_key_raw().to_vec(),
                    },
                    validity,
                )
                .unwrap();
            write_identity(
                dir.path(),
                key.serialize_pem(),
                cert,
                ca.certificate_pem.clone(),
            )
            .unwrap();
        };
        write(Duration::from_secs(365 * 86400));
        assert_eq!(needs_renewal(dir.path(), ca_pem, "n1"), None);
        let why = needs_renewal(dir.path(), ca_pem, "n2").unwrap();
        assert!(why.contains("n2"), "{why}");
        let other = CertificateAuthority::generate().unwrap();
        assert!(needs_renewal(dir.path(), other.certificate_pem.as_bytes(), "n1").is_some());
        // Valid from 5 minutes ago for 6 minutes: past two thirds of its life.
        write(Duration::from_secs(60));
        let why = needs_renewal(dir.path(), ca_pem, "n1").unwrap();
        assert!(why.contains("last third"), "{why}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_three_files_are_switched_together_and_an_old_layout_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        // An older layout: three regular files.
        write_atomically(&f.private_key, "old key".into(), 0o600).unwrap();
        write_atomically(&f.certificate, "old cert".into(), 0o644).unwrap();
        write_atomically(&f.ca, "ca".into(), 0o644).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let data = |dir: &Path| std::fs::read_link(dir.join(DATA_LINK)).unwrap();
        let hidden = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".."))
                .collect();
            v.sort();
            v
        };
        write_identity(dir.path(), "key 1".into(), "cert 1".into(), "ca".into()).unwrap();
        for (path, name) in [
            (&f.private_key, "tls.key"),
            (&f.certificate, "tls.crt"),
            (&f.ca, "ca.crt"),
        ] {
            assert_eq!(
                std::fs::read_link(path).unwrap(),
                Path::new(DATA_LINK).join(name)
            );
        }
        assert_eq!(
            (read(&f.private_key), read(&f.certificate)),
            ("key 1".into(), "cert 1".into())
        );
        let first = data(dir.path());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key, through its link");

        write_identity(dir.path(), "key 2".into(), "cert 2".into(), "ca".into()).unwrap();
        assert_ne!(data(dir.path()), first, "a new directory");
        assert_eq!(
            (read(&f.private_key), read(&f.certificate)),
            ("key 2".into(), "cert 2".into())
        );
        // Only the link and the current directory are left, no temporary file either.
        let mut expected = vec![DATA_LINK.to_owned(), data(dir.path()).display().to_string()];
        expected.sort();
        assert_eq!(hidden(dir.path()), expected);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
