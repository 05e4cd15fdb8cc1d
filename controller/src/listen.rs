//! Where the controller may listen, and taking over its unix socket paths.
//!
//! Owns two startup checks on the listener flags (`--openflow-listen`, `--cni-listen`):
//!
//! - without TLS every listener is loopback or a unix socket, because
//!   whoever reaches a plaintext OpenFlow listener can connect as a node's br-int and be
//!   programmed as that node, and whoever reaches the CNI listener can attach and detach
//!   pods on any node. A TCP address beyond loopback is refused unless the operator passes
//!   `--insecure-listen`, which logs a warning saying what it exposes;
//! - a unix socket path answered by a live process (another controller) is refused; a stale
//!   socket file (nothing answers) is removed so the bind succeeds.
//!
//! It does not bind anything: `controller::run`, the CNI server and `openflow::Listener` do.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use switchyard_target::Target;
use tracing::warn;

use crate::Error;
use crate::controller::Config;

/// Checks every listener flag of `config` before anything is bound: plaintext TCP beyond
/// loopback only with `--insecure-listen` (then a warning each), and no unix socket path
/// held by a live process (stale ones are removed).
pub fn check_listeners(config: &Config) -> Result<(), Error> {
    let openflow = Target::parse_listen(&config.openflow_listen).map_err(|e| {
        Error::Config(format!(
            "--openflow-listen {:?}: {}",
            config.openflow_listen, e.reason
        ))
    })?;
    let cni = Target::parse_connect(&config.cni_listen).map_err(|e| {
        Error::Config(format!(
            "--cni-listen {:?}: {}",
            config.cni_listen, e.reason
        ))
    })?;
    let no_tls = config.switch_tls.is_none();
    if no_tls && openflow.is_tls() {
        return Err(Error::Config(format!(
            "--openflow-listen {:?} is TLS: give --switch-tls-ca, --switch-tls-cert and \
             --switch-tls-key (the CA that signs the nodes' certificates, and the \
             controller's own)",
            config.openflow_listen
        )));
    }
    if no_tls && config.ovsdb_template.starts_with("ssl:") {
        return Err(Error::Config(format!(
            "--ovsdb-template {:?} is TLS: give --switch-tls-ca, --switch-tls-cert and \
             --switch-tls-key",
            config.ovsdb_template
        )));
    }
    if cni.is_tls() && config.cni_tls.is_none() {
        return Err(Error::Config(format!(
            "--cni-listen {:?} is TLS: give --cni-tls-ca, --cni-tls-cert and --cni-tls-key \
             (the CA that signs the nodes' CNI certificates, and the controller's own)",
            config.cni_listen
        )));
    }
    if config.cni_tls.is_some() && !cni.is_tls() {
        return Err(Error::Config(format!(
            "--cni-tls-* given but --cni-listen {:?} is not ssl:IP:PORT; listen on ssl: or \
             drop the --cni-tls-* flags",
            config.cni_listen
        )));
    }
    for (flag, value, target, exposes) in [
        (
            "--openflow-listen",
            &config.openflow_listen,
            &openflow,
            "any host that reaches it can connect as a node's br-int (a node not yet \
             connected) and is then programmed with that node's pods, tunnels and policies",
        ),
        (
            "--cni-listen",
            &config.cni_listen,
            &cni,
            "any host that reaches it can attach and detach pods on every node (only a \
             node's own veths, and never over a running pod, but for any node)",
        ),
    ] {
        if let Some(addrs) = beyond_loopback(flag, value, target)? {
            if !config.insecure_listen {
                return Err(Error::Config(format!(
                    "{flag} {value:?} is plaintext TCP beyond loopback ({addrs}): without \
                     TLS the controller listens only on loopback or unix sockets (e.g. \
                     {}); pass --insecure-listen to expose it anyway",
                    loopback_example(flag)
                )));
            }
            warn!(
                flag,
                listen = %value,
                "--insecure-listen: plaintext, unauthenticated listener beyond loopback \
                 ({addrs}): {exposes}; firewall it to the nodes"
            );
        }
        if let Target::Unix(path) | Target::PUnix(path) = target {
            claim_unix_socket(flag, value, path)?;
        }
    }
    Ok(())
}

fn loopback_example(flag: &str) -> &'static str {
    if flag == "--openflow-listen" {
        "ptcp:6653:127.0.0.1 or punix:/run/switchyard/ofp.sock"
    } else {
        "tcp:127.0.0.1:6654 or unix:/run/switchyard/cni.sock"
    }
}

/// The addresses a TCP target listens on that are not loopback (`None` when all are, or
/// for a unix socket). A host name is resolved as the bind will resolve it.
fn beyond_loopback(flag: &str, value: &str, target: &Target) -> Result<Option<String>, Error> {
    let addrs: Vec<SocketAddr> = match target {
        Target::PTcp(addr) => vec![*addr],
        Target::Tcp(host_port) => host_port
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("{flag} {value:?}: cannot resolve: {e}")))?
            .collect(),
        // TLS is not plaintext: who may connect is what the CA signs.
        Target::Unix(_) | Target::PUnix(_) | Target::Ssl(_) | Target::PSsl(_) => return Ok(None),
    };
    let outside: Vec<String> = addrs
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !is_loopback(ip))
        .map(|ip| {
            if ip.is_unspecified() {
                format!("{ip} (every interface)")
            } else {
                ip.to_string()
            }
        })
        .collect();
    Ok((!outside.is_empty()).then(|| outside.join(", ")))
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // ::ffff:127.0.0.1 is loopback too.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Makes `path` free for a new listener: refused when a live process answers on it (a
/// second controller must not silently take over the first one's socket), removed when it
/// is a socket nobody answers on (left by a controller that died).
fn claim_unix_socket(flag: &str, value: &str, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Config(format!(
                "{flag} {value:?}: cannot look at {}: {e}",
                path.display()
            )));
        }
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Config(format!(
            "{flag} {value:?}: {} exists and is not a socket; remove it or choose another path",
            path.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::Config(format!(
            "{flag} {value:?}: {} is held by a live process (another controller?): \
             something accepted a connection on it; stop that process or choose another path",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            warn!(flag, path = %path.display(), "removing a stale socket nobody listens on");
            std::fs::remove_file(path).map_err(|e| {
                Error::Config(format!(
                    "{flag} {value:?}: cannot remove the stale socket {}: {e}",
                    path.display()
                ))
            })
        }
        Err(e) => Err(Error::Config(format!(
            "{flag} {value:?}: cannot tell whether {} is in use: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(s: &str) -> Option<String> {
        let target = s.parse::<Target>().unwrap();
        beyond_loopback("--x", s, &target).unwrap()
    }

    #[test]
    fn loopback_and_unix_are_local_everything_else_is_exposed() {
        for local in [
            "ptcp:6653:127.0.0.1",
            "ptcp:6653:[::1]",
            "tcp:127.0.0.1:6654",
            "tcp:127.0.0.2:6654",
            "tcp:[::1]:6654",
            "tcp:[::ffff:127.0.0.1]:6654",
            "unix:/run/x.sock",
            "punix:/run/x.sock",
        ] {
            assert_eq!(exposed(local), None, "{local}");
        }
        assert_eq!(
            exposed("ptcp:6653").as_deref(),
            Some("0.0.0.0 (every interface)")
        );
        assert_eq!(
            exposed("tcp:0.0.0.0:6654").as_deref(),
            Some("0.0.0.0 (every interface)")
        );
        assert_eq!(exposed("tcp:10.1.2.3:6654").as_deref(), Some("10.1.2.3"));
        assert_eq!(
            exposed("ptcp:6653:[::]").as_deref(),
            Some(":: (every interface)")
        );
    }
}
