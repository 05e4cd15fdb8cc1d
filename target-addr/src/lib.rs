//! OVS-style connection targets, as `ovs-vsctl`, `ovsdb-client` and `ovs-ofctl` spell
//! them: `unix:PATH`, `tcp:HOST:PORT` and `ssl:HOST:PORT` to connect, `punix:PATH`,
//! `ptcp:PORT[:IP]` and `pssl:PORT[:IP]` to listen. `ssl:`/`pssl:` are TCP with TLS; which
//! crates speak TLS, and with which certificates, is theirs to say (switchyard-tls).
//!
//! The one parser every Switchyard crate uses, so that the same string means the same
//! thing (and is rejected with the same words) whether it configures the OpenFlow
//! connection, the OVSDB client, the CNI shim or the controller's CNI socket. It has no
//! dependencies, so the protocol crates can use it without depending on each other.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `unix:PATH`: connect to a Unix socket.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (`tcp:[IPv6]:PORT` for IPv6): connect over TCP. Holds `HOST:PORT`
    /// as given, ready for `ToSocketAddrs`; the port is checked to be numeric, the host
    /// is resolved only when connecting.
    Tcp(String),
    /// `punix:PATH`: listen on a Unix socket.
    PUnix(PathBuf),
    /// `ptcp:PORT[:IP]` (IPv6 as `ptcp:PORT:[ADDR]`, default IP 0.0.0.0): listen on TCP.
    PTcp(SocketAddr),
    /// `ssl:HOST:PORT`: connect over TCP with TLS (`HOST:PORT` as for `tcp:`).
    Ssl(String),
    /// `pssl:PORT[:IP]`: listen on TCP with TLS (as for `ptcp:`).
    PSsl(SocketAddr),
}

/// Which forms a caller accepts, for the error message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Connect,
    Listen,
    Any,
}

impl Side {
    fn accepted(self) -> &'static str {
        match self {
            Side::Connect => "expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT",
            Side::Listen => "expected punix:PATH, ptcp:PORT[:IP] or pssl:PORT[:IP]",
            Side::Any => {
                "expected unix:PATH, tcp:HOST:PORT, ssl:HOST:PORT, punix:PATH, ptcp:PORT[:IP] or pssl:PORT[:IP]"
            }
        }
    }
}

/// A target string that is not one of the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The string as given.
    pub input: String,
    /// What is wrong with it, naming the accepted forms.
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad target {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl Target {
    /// Parses a target to connect to: `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
    pub fn parse_connect(s: &str) -> Result<Target, ParseError> {
        parse(s, Side::Connect)
    }

    /// Parses a target to listen on: `punix:PATH`, `ptcp:PORT[:IP]` or `pssl:PORT[:IP]`.
    pub fn parse_listen(s: &str) -> Result<Target, ParseError> {
        parse(s, Side::Listen)
    }

    /// True for `punix:`, `ptcp:` and `pssl:` targets.
    pub fn is_listen(&self) -> bool {
        matches!(self, Target::PUnix(_) | Target::PTcp(_) | Target::PSsl(_))
    }

    /// True for `ssl:` and `pssl:` targets.
    pub fn is_tls(&self) -> bool {
        matches!(self, Target::Ssl(_) | Target::PSsl(_))
    }
}

impl FromStr for Target {
    type Err = ParseError;

    /// Parses any of the six forms.
    fn from_str(s: &str) -> Result<Target, ParseError> {
        parse(s, Side::Any)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Tcp(host_port) => write!(f, "tcp:{host_port}"),
            Target::PUnix(path) => write!(f, "punix:{}", path.display()),
            Target::PTcp(addr) if addr.is_ipv6() => {
                write!(f, "ptcp:{}:[{}]", addr.port(), addr.ip())
            }
            Target::PTcp(addr) => write!(f, "ptcp:{}:{}", addr.port(), addr.ip()),
            Target::Ssl(host_port) => write!(f, "ssl:{host_port}"),
            Target::PSsl(addr) if addr.is_ipv6() => {
                write!(f, "pssl:{}:[{}]", addr.port(), addr.ip())
            }
            Target::PSsl(addr) => write!(f, "pssl:{}:{}", addr.port(), addr.ip()),
        }
    }
}

fn parse(s: &str, side: Side) -> Result<Target, ParseError> {
    let bad = |reason| ParseError {
        input: s.to_owned(),
        reason,
    };
    let Some((kind, rest)) = s.split_once(':') else {
        return Err(bad(side.accepted()));
    };
    let target = match kind {
        "unix" | "punix" => {
            if rest.is_empty() {
                return Err(bad("empty socket path (expected unix:PATH or punix:PATH)"));
            }
            let path = PathBuf::from(rest);
            if kind == "unix" {
                Target::Unix(path)
            } else {
                Target::PUnix(path)
            }
        }
        "tcp" | "ssl" => {
            let valid = rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(bad(if kind == "tcp" {
                    "expected tcp:HOST:PORT with a numeric port"
                } else {
                    "expected ssl:HOST:PORT with a numeric port"
                }));
            }
            if kind == "tcp" {
                Target::Tcp(rest.to_owned())
            } else {
                Target::Ssl(rest.to_owned())
            }
        }
        "ptcp" | "pssl" => {
            let (port, ip) = match rest.split_once(':') {
                Some((port, ip)) => (port, ip.trim_start_matches('[').trim_end_matches(']')),
                None => (rest, ""),
            };
            let tls = kind == "pssl";
            let port: u16 = port.parse().map_err(|_| {
                bad(if tls {
                    "expected pssl:PORT[:IP] with a numeric port"
                } else {
                    "expected ptcp:PORT[:IP] with a numeric port"
                })
            })?;
            let ip = if ip.is_empty() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                ip.parse().map_err(|_| {
                    bad(if tls {
                        "expected pssl:PORT[:IP] with an IP address"
                    } else {
                        "expected ptcp:PORT[:IP] with an IP address"
                    })
                })?
            };
            if tls {
                Target::PSsl(SocketAddr::new(ip, port))
            } else {
                Target::PTcp(SocketAddr::new(ip, port))
            }
        }
        _ => return Err(bad(side.accepted())),
    };
    match (side, target.is_listen()) {
        (Side::Connect, true) => Err(bad(
            "a listening target where one to connect to is needed (expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT)",
        )),
        (Side::Listen, false) => Err(bad(
            "a target to connect to where one to listen on is needed (expected punix:PATH, ptcp:PORT[:IP] or pssl:PORT[:IP])",
        )),
        _ => Ok(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_forms_parse_and_print_back() {
        for (text, target) in [
            ("unix:/run/br0.mgmt", Target::Unix("/run/br0.mgmt".into())),
            ("tcp:127.0.0.1:6653", Target::Tcp("127.0.0.1:6653".into())),
            ("tcp:[::1]:6640", Target::Tcp("[::1]:6640".into())),
            (
                "tcp:ovsdb.local:6640",
                Target::Tcp("ovsdb.local:6640".into()),
            ),
            ("punix:/run/sw.sock", Target::PUnix("/run/sw.sock".into())),
            (
                "ptcp:6653:10.0.0.1",
                Target::PTcp("10.0.0.1:6653".parse().unwrap()),
            ),
            (
                "ptcp:6653:[::1]",
                Target::PTcp("[::1]:6653".parse().unwrap()),
            ),
            ("ssl:10.0.0.1:6640", Target::Ssl("10.0.0.1:6640".into())),
            (
                "pssl:6653:127.0.0.1",
                Target::PSsl("127.0.0.1:6653".parse().unwrap()),
            ),
        ] {
            assert_eq!(text.parse::<Target>(), Ok(target.clone()), "{text}");
            assert_eq!(target.to_string(), text);
        }
        assert_eq!(
            "ptcp:6653".parse::<Target>(),
            Ok(Target::PTcp("0.0.0.0:6653".parse().unwrap()))
        );
    }

    #[test]
    fn bad_targets_are_rejected_naming_the_input_and_the_accepted_forms() {
        for bad in [
            "",
            "/tmp/x",
            "unix:",
            "punix:",
            "tcp:1.2.3.4",
            "tcp::6653",
            "tcp:1.2.3.4:x",
            "ptcp:x",
            "ptcp:6653:nowhere",
            "ssl:1.2.3.4",
            "pssl:x",
            "http://x",
        ] {
            let error = bad.parse::<Target>().unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
    }

    #[test]
    fn each_side_refuses_the_other() {
        assert!(Target::parse_connect("tcp:1.2.3.4:6640").is_ok());
        assert!(Target::parse_listen("ptcp:6640").is_ok());
        let error = Target::parse_connect("ptcp:6653").unwrap_err();
        assert!(
            error
                .reason
                .contains("unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"),
            "{error}"
        );
        let error = Target::parse_listen("unix:/x").unwrap_err();
        assert!(
            error
                .reason
                .contains("punix:PATH, ptcp:PORT[:IP] or pssl:PORT[:IP]"),
            "{error}"
        );
        let error = Target::parse_connect("http://x").unwrap_err();
        assert_eq!(
            error.reason,
            "expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"
        );
    }
}
