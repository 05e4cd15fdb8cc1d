//! A throwaway PKI for TLS tests: one CA, and certificates it signs for names (a DNS
//! subjectAltName each, as a node's switch certificate carries its node name), written as
//! PEM files the way an operator would hand them to OVS (`ovs-vsctl set-ssl`) and to the
//! controller (`--switch-tls-*`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA with its key, writing into one directory.
pub struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    tag: String,
}

/// The three files of one identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The CA certificate (what peers must chain to).
    pub ca: PathBuf,
    /// This identity's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Pki {
    /// A new CA; its files go into `dir`, names prefixed with `tag` (two CAs may share
    /// a directory).
    pub fn new(dir: &Path, tag: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("switchyard test CA {tag}"));
        let ca = params.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.join(format!("{tag}-ca.pem")), ca.pem()).expect("write the CA");
        Pki {
            dir: dir.into(),
            ca,
            ca_key,
            tag: tag.into(),
        }
    }

    /// A certificate for `name` (DNS subjectAltName and common name), signed by this CA.
    pub fn issue(&self, name: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let (tag, d) = (&self.tag, &self.dir);
        let identity = Identity {
            ca: d.join(format!("{tag}-ca.pem")),
            cert: d.join(format!("{tag}-{name}-cert.pem")),
            key: d.join(format!("{tag}-{name}-key.pem")),
        };
        std::fs::write(&identity.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&identity.key, key.serialize_pem()).expect("write the key");
        identity
    }
}

impl Identity {
    /// As the TLS crate takes it.
    pub fn files(&self) -> switchyard_tls::TlsFiles {
        switchyard_tls::TlsFiles {
            ca: self.ca.clone(),
            certificate: self.cert.clone(),
            private_key: self.key.clone(),
        }
    }

    /// OVSDB client options presenting this identity and expecting the server to be
    /// `server_name`.
    pub fn ovsdb_options(&self, server_name: &str) -> ovsdb::ClientOptions {
        ovsdb::ClientOptions {
            tls: Some(ovsdb::TlsClient {
                config: switchyard_tls::client_config(&self.files()).expect("client config"),
                server_name: server_name.into(),
            }),
            ..Default::default()
        }
    }

    /// `ovs-vsctl set-ssl KEY CERT CA` arguments.
    pub fn set_ssl_args(&self) -> Vec<String> {
        ["set-ssl", path(&self.key), path(&self.cert), path(&self.ca)]
            .map(String::from)
            .to_vec()
    }
}

/// Connects to `target` and lists its databases, bounded in time (5 s).
pub async fn list_dbs(target: &str, options: ovsdb::ClientOptions) -> Result<Vec<String>, String> {
    let attempt = async {
        let client = ovsdb::Client::connect_with(target, options)
            .await
            .map_err(|e| e.to_string())?;
        client.list_dbs().await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in 5 s".into()))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
