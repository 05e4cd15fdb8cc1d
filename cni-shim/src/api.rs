//! The pod-attach protocol between the CNI shim and the Switchyard controller.
//!
//! Owns: the request/reply types, their JSON encoding, the blocking one-request-per-connection
//! client ([`call`]) and the host-side veth naming rule ([`host_iface_name`]). The controller
//! crate depends on this module for the same types, so it stays free of heavy dependencies
//! (serde, std I/O, and synchronous rustls through `switchyard-tls` for `ssl:`).
//!
//! Does not own: veth creation or netlink (see [`crate::link`]), or the CNI plugin protocol
//! (see [`crate::plugin`]).
//!
//! # Wire format
//!
//! The controller address is `unix:PATH` (a Unix stream socket), `tcp:HOST:PORT`, or
//! `ssl:HOST:PORT` (TCP with mutual TLS: [`ClientTls`], the node's certificate). Per
//! connection the shim writes exactly one JSON object ([`Request`]) followed by `"\n"`; the
//! controller answers one JSON object ([`Reply`]) followed by `"\n"` and closes. Examples:
//!
//! ```text
//! → {"op":"add","namespace":"default","pod":"web-0","container_id":"c0ffee","netns":"/run/netns/x",
//!    "ifname":"eth0","host_iface":"sy1a2b3c4d5e6f","pod_mac":null,"node":"node-1","host_ifindex":7}
//! ← {"ok":{"address":"10.244.1.5/24","mac":"0a:58:0a:f4:01:05","gateway":"10.244.1.1","mtu":1450,
//!    "routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"userspace_datapath":true}}
//! → {"op":"status","node":"node-1"}
//! ← {"ok":null}
//! → {"op":"gc","node":"node-1","valid":[{"container_id":"c0ffee","ifname":"eth0"}]}
//! ← {"ok":null}
//! ← {"error":{"code":110,"msg":"unknown pod","details":"default/web-0 is not in the cluster state"}}
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_target::Target;

use crate::Error;

/// One request from the shim to the controller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Host end of the veth exists in the node's namespace; allocate/return the pod's address, add
    /// the host end to br-int, install the pod's flows; reply only when they are installed.
    Add(PodRef),
    /// Remove the pod's port and flows. Idempotent.
    Del(PodRef),
    /// Return what the controller holds for the pod (same reply as Add), installing nothing.
    Check(PodRef),
    /// Is the controller ready to add pods on this node?
    Status {
        /// The node the asking shim runs on, when it knows it.
        node: Option<String>,
    },
    /// CNI GC: remove every attachment on `node` that `valid` does not list (their ports,
    /// flows and the pods' hold on them).
    Gc {
        /// The node the asking shim runs on.
        node: String,
        /// The attachments the runtime still uses.
        valid: Vec<ValidAttachment>,
    },
}

/// One attachment a CNI GC keeps: the runtime's `cni.dev/valid-attachments` entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidAttachment {
    /// The runtime's container id.
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
}

/// Identifies one pod attachment (one CNI ADD) to the controller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodRef {
    /// Kubernetes namespace of the pod (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// Pod name (`K8S_POD_NAME`).
    pub pod: String,
    /// The runtime's container id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`); may be empty on DEL.
    pub netns: String,
    /// Interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// Name of the host end of the veth in the node's namespace ([`host_iface_name`]).
    pub host_iface: String,
    /// MAC of the pod-side interface, when the shim knows it (informational).
    pub pod_mac: Option<String>,
    /// The node the asking shim runs on (`nodeName`, else the host name). Over TLS the
    /// controller checks it against the caller's certificate and the pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// ADD: the interface index of `host_iface` in the node's namespace, when the shim has
    /// just created (and looked up) it there: the shim vouches that the interface exists
    /// where vswitchd runs. Once vswitchd has accepted a vouched interface on the node,
    /// the controller answers a vouched ADD without waiting for vswitchd to number the
    /// port (docs/operations.md, *What the CNI plugin does*). Absent: it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
}

/// The controller's answer to any [`Request`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success. `Add` and `Check` carry the pod's network; `Del` and `Status` carry `None`.
    Ok(Option<PodNetwork>),
    /// Failure, with a CNI error code (≥ 100 for Switchyard-specific errors, 11 for "try again").
    Error(ErrorReply),
}

/// What the pod's interface must look like.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodNetwork {
    /// The pod's address with its prefix length, e.g. `10.244.1.5/24`.
    pub address: ipnet::IpNet,
    /// e.g. `"0a:58:0a:f4:01:05"`: the pod interface MUST use this MAC (spoof guard matches it).
    pub mac: String,
    /// The pod's default gateway, e.g. `10.244.1.1`.
    pub gateway: std::net::IpAddr,
    /// Pod MTU (underlay minus encapsulation overhead); set on both veth ends.
    pub mtu: u32,
    /// Routes to install in the pod, e.g. `[{dst: 0.0.0.0/0, gw: Some(10.244.1.1)}]`.
    pub routes: Vec<Route>,
    /// If true, turn tx checksum offload off on both veth ends: OVS's userspace datapath does
    /// not fill in checksums a veth left to "hardware", so TCP silently fails while ping works.
    pub userspace_datapath: bool,
}

/// One route inside the pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Route {
    /// Destination prefix.
    pub dst: ipnet::IpNet,
    /// Next hop; `None` for an on-link route.
    pub gw: Option<std::net::IpAddr>,
}

/// A failure reported by the controller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// CNI error code the shim passes on (CNI SPEC.md "Error": 11 = try again later, ≥ 100 ours).
    pub code: u32,
    /// Short human-readable message.
    pub msg: String,
    /// Longer explanation (which pod, which object was missing, ...).
    pub details: String,
}

/// Largest reply the shim accepts; a pod network is a few hundred bytes, so anything near this
/// is a misbehaving peer rather than a reply.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Sends one request to the controller at `controller` (`unix:PATH` or `tcp:HOST:PORT`) and
/// waits at most `timeout` in total (connect + write + read) for its reply.
///
/// A reply of [`Reply::Error`] is returned as `Ok(Reply::Error(..))`: the protocol worked, the
/// controller said no. `Err` means the exchange itself failed: bad address, unreachable
/// controller, a connection closed before a full line, a reply that is not a [`Reply`], or the
/// timeout.
pub fn call(controller: &str, request: &Request, timeout: Duration) -> Result<Reply, Error> {
    call_with(controller, None, request, timeout)
}

/// The shim's TLS identity towards an `ssl:` controller: the node's certificate and key,
/// the CA that signed the controller's, and the name the controller's certificate must
/// carry (default: the host of the `ssl:HOST:PORT` address).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The rustls configuration ([`switchyard_tls::client_config`]).
    pub config: std::sync::Arc<switchyard_tls::ClientConfig>,
    /// The controller's name in its certificate, when not the address's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Reads the PEM files (CA, certificate, key).
    pub fn new(
        files: &switchyard_tls::TlsFiles,
        server_name: Option<String>,
    ) -> Result<ClientTls, Error> {
        let config = switchyard_tls::client_config(files).map_err(|e| Error::InvalidConfig {
            field: "tls",
            reason: e.to_string(),
        })?;
        Ok(ClientTls {
            config,
            server_name,
        })
    }
}

/// [`call`], with the TLS identity an `ssl:` controller address needs.
pub fn call_with(
    controller: &str,
    tls: Option<&ClientTls>,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, Error> {
    let deadline = Instant::now() + timeout;
    let mut line = serde_json::to_vec(request).map_err(|e| Error::Encode(e.to_string()))?;
    line.push(b'\n');
    let io_err = |what: &'static str| {
        move |e: std::io::Error| Error::Controller {
            controller: controller.to_owned(),
            what,
            source: e,
        }
    };
    let reply = match parse_address(controller)? {
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(io_err("connect"))?;
            stream
                .set_write_timeout(Some(remaining(deadline, controller)?))
                .map_err(io_err("set timeout"))?;
            exchange(stream, &line, deadline, controller, |s, t| {
                s.set_read_timeout(t)
            })?
        }
        Target::Tcp(host_port) => {
            let stream = connect_tcp(&host_port, deadline, controller)?;
            exchange(stream, &line, deadline, controller, |s, t| {
                s.set_read_timeout(t)
            })?
        }
        Target::Ssl(host_port) => {
            let Some(tls) = tls else {
                return Err(Error::InvalidConfig {
                    field: "tls",
                    reason: format!(
                        "controller {controller} is ssl: and needs \"tls\": {{\"ca\", \"cert\", \"key\"}} (the node's certificate)"
                    ),
                });
            };
            let host = tls
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(&host_port));
            let name = switchyard_tls::server_name(&host).map_err(|e| Error::InvalidConfig {
                field: "tls.serverName",
                reason: e.to_string(),
            })?;
            let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| {
                Error::InvalidConfig {
                    field: "tls",
                    reason: e.to_string(),
                }
            })?;
            let stream = connect_tcp(&host_port, deadline, controller)?;
            let tls_stream = rustls::StreamOwned::new(conn, stream);
            exchange(tls_stream, &line, deadline, controller, |s, t| {
                s.sock.set_read_timeout(t)
            })?
        }
        Target::PUnix(_) | Target::PTcp(_) | Target::PSsl(_) => {
            return Err(Error::ControllerAddress {
                controller: controller.to_owned(),
                reason: "a listening target: expected unix:PATH or tcp:HOST:PORT",
            });
        }
    };
    serde_json::from_slice::<Reply>(&reply).map_err(|e| Error::ControllerReply {
        controller: controller.to_owned(),
        reason: e.to_string(),
        reply: String::from_utf8_lossy(&reply).into_owned(),
    })
}

/// The host of `HOST:PORT` (`[v6]:PORT` without its brackets).
fn host_of(host_port: &str) -> String {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// Connects to the first address of `host_port` that answers, with the write timeout set.
fn connect_tcp(host_port: &str, deadline: Instant, controller: &str) -> Result<TcpStream, Error> {
    let io_err = |what: &'static str| {
        move |e: std::io::Error| Error::Controller {
            controller: controller.to_owned(),
            what,
            source: e,
        }
    };
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(io_err("resolve"))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline, controller)?) {
            Ok(stream) => {
                stream
                    .set_write_timeout(Some(remaining(deadline, controller)?))
                    .map_err(io_err("set timeout"))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(io_err("connect")(e)),
        None => Err(Error::ControllerAddress {
            controller: controller.to_owned(),
            reason: "the host name resolves to no address",
        }),
    }
}

fn parse_address(controller: &str) -> Result<Target, Error> {
    Target::parse_connect(controller).map_err(|error| Error::ControllerAddress {
        controller: error.input,
        reason: error.reason,
    })
}

fn remaining(deadline: Instant, controller: &str) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::ControllerTimeout {
            controller: controller.to_owned(),
        });
    }
    Ok(left)
}

/// Writes the request line and reads one reply line. The read timeout is re-armed before
/// every read with what is left until `deadline`, so a peer that trickles bytes cannot stretch
/// the exchange past the caller's timeout.
fn exchange<S: Read + Write>(
    mut stream: S,
    line: &[u8],
    deadline: Instant,
    controller: &str,
    set_read_timeout: impl Fn(&S, Option<Duration>) -> std::io::Result<()>,
) -> Result<Vec<u8>, Error> {
    let map = |what: &'static str, e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Error::ControllerTimeout {
                controller: controller.to_owned(),
            }
        } else {
            Error::Controller {
                controller: controller.to_owned(),
                what,
                source: e,
            }
        }
    };
    stream.write_all(line).map_err(|e| map("send request", e))?;
    stream.flush().map_err(|e| map("send request", e))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        set_read_timeout(&stream, Some(remaining(deadline, controller)?))
            .map_err(|e| map("set timeout", e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(map("read reply", e)),
        };
        if n == 0 {
            return Err(Error::ControllerClosed {
                controller: controller.to_owned(),
                partial: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = reply.iter().position(|&b| b == b'\n') {
            reply.truncate(end);
            return Ok(reply);
        }
        if reply.len() > MAX_REPLY_BYTES {
            return Err(Error::ControllerReply {
                controller: controller.to_owned(),
                reason: format!("no end of line within {MAX_REPLY_BYTES} bytes"),
                reply: String::from_utf8_lossy(&reply[..200]).into_owned(),
            });
        }
    }
}

/// The name of the host end of the pod's veth in the node's namespace.
///
/// `"sy"` followed by the first 12 lowercase hex digits (48 bits) of the 64-bit FNV-1a hash of
/// the bytes of `container_id`, one NUL byte, then the bytes of `ifname`: always 14 bytes, inside
/// Linux's 15-byte `IFNAMSIZ` limit, and the same on every call, so DEL and GC can find the
/// interface ADD made without any state on disk. FNV-1a is written out here (rather than
/// `std::hash`) because std's hashers are not guaranteed stable across Rust releases, and the
/// controller and older shims must agree on names.
pub fn host_iface_name(container_id: &str, ifname: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in container_id
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(ifname.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{HOST_IFACE_PREFIX}{:012x}", hash >> 16)
}

/// Prefix of every host-side interface the shim creates ([`host_iface_name`]); GC only ever
/// deletes interfaces whose name has this prefix and the right length.
pub const HOST_IFACE_PREFIX: &str = "sy";

/// True for names [`host_iface_name`] can produce.
pub fn is_host_iface_name(name: &str) -> bool {
    name.strip_prefix(HOST_IFACE_PREFIX).is_some_and(|rest| {
        rest.len() == 12 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            pod: "web-0".into(),
            container_id: "c0ffee".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_iface: host_iface_name("c0ffee", "eth0"),
            pod_mac: None,
            node: None,
            host_ifindex: None,
        }
    }

    #[test]
    fn request_json_is_tagged_by_op() {
        let json = serde_json::to_value(Request::Add(pod())).unwrap();
        assert_eq!(json["op"], "add");
        assert_eq!(json["container_id"], "c0ffee");
        let status = serde_json::to_string(&Request::Status { node: None }).unwrap();
        assert_eq!(status, r#"{"op":"status","node":null}"#);
        for req in [
            Request::Add(pod()),
            Request::Del(pod()),
            Request::Check(pod()),
            Request::Status {
                node: Some("n1".into()),
            },
            Request::Gc {
                node: "n1".into(),
                valid: vec![ValidAttachment {
                    container_id: "c0ffee".into(),
                    ifname: "eth0".into(),
                }],
            },
        ] {
            let text = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        }
    }

    #[test]
    fn reply_json_matches_the_documented_examples() {
        let ok: Reply = serde_json::from_str(
            r#"{"ok":{"address":"10.244.1.5/24","mac":"0a:58:0a:f4:01:05","gateway":"10.244.1.1",
                "mtu":1450,"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"userspace_datapath":true}}"#,
        )
        .unwrap();
        let Reply::Ok(Some(net)) = ok else {
            panic!("not ok: {ok:?}")
        };
        assert_eq!(net.address.to_string(), "10.244.1.5/24");
        assert_eq!(net.routes[0].gw.unwrap().to_string(), "10.244.1.1");
        assert_eq!(
            serde_json::from_str::<Reply>(r#"{"ok":null}"#).unwrap(),
            Reply::Ok(None)
        );
        let err: Reply =
            serde_json::from_str(r#"{"error":{"code":110,"msg":"unknown pod","details":"x"}}"#)
                .unwrap();
        assert!(matches!(err, Reply::Error(ErrorReply { code: 110, .. })));
    }

    #[test]
    fn host_iface_name_is_stable_and_short() {
        let a = host_iface_name("c0ffee", "eth0");
        assert_eq!(a, host_iface_name("c0ffee", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("sy"));
        assert_ne!(a, host_iface_name("c0ffee", "eth1"));
        assert_ne!(host_iface_name("ab", "c"), host_iface_name("a", "bc"));
        // Pinned: changing the rule would orphan every veth of a running node.
        assert_eq!(host_iface_name("", ""), "syaf63bd4c8601");
    }

    /// Serves one connection on a fresh Unix socket: reads the request line, writes `reply`
    /// (unless `None`: then holds the connection open without answering).
    fn one_shot_unix(
        reply: Option<&'static [u8]>,
    ) -> (String, std::thread::JoinHandle<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(conn.try_clone().unwrap()),
                &mut line,
            )
            .unwrap();
            match reply {
                Some(bytes) => (&conn).write_all(bytes).unwrap(),
                None => {
                    // Wait for the client to give up and close.
                    let _ = (&conn).read(&mut [0u8; 1]);
                }
            }
            line
        });
        (format!("unix:{}", path.display()), server, dir)
    }

    #[test]
    fn call_sends_one_line_and_reads_one_reply() {
        let (addr, server, _dir) = one_shot_unix(Some(b"{\"ok\":null}\n"));
        let reply = call(
            &addr,
            &Request::Status { node: None },
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(reply, Reply::Ok(None));
        assert_eq!(
            server.join().unwrap(),
            "{\"op\":\"status\",\"node\":null}\n"
        );
    }

    #[test]
    fn call_over_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp:{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"{\"error\":{\"code\":11,\"msg\":\"busy\",\"details\":\"\"}}\n")
                .unwrap();
        });
        let reply = call(&addr, &Request::Del(pod()), Duration::from_secs(10)).unwrap();
        assert!(matches!(reply, Reply::Error(ErrorReply { code: 11, .. })));
        server.join().unwrap();
    }

    #[test]
    fn call_reports_each_way_a_peer_can_fail() {
        let (addr, _server, _dir) = one_shot_unix(Some(b"{\"ok\":"));
        let err = call(
            &addr,
            &Request::Status { node: None },
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::ControllerClosed { partial, .. } if partial == "{\"ok\":"),
            "{err}"
        );

        let (addr, _server, _dir) = one_shot_unix(Some(b"hello\n"));
        let err = call(
            &addr,
            &Request::Status { node: None },
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::ControllerReply { reply, .. } if reply == "hello"),
            "{err}"
        );

        let (addr, _server, _dir) = one_shot_unix(None);
        let err = call(
            &addr,
            &Request::Status { node: None },
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, Error::ControllerTimeout { .. }), "{err}");

        let err = call(
            "unix:/nonexistent/switchyard/cni.sock",
            &Request::Status { node: None },
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Controller {
                    what: "connect",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("/nonexistent/switchyard/cni.sock"),
            "{err}"
        );
    }

    #[test]
    fn bad_addresses_are_rejected_before_connecting() {
        for addr in ["", "unix:", "tcp:nohost", "http://x"] {
            let err = call(
                addr,
                &Request::Status { node: None },
                Duration::from_secs(1),
            )
            .unwrap_err();
            assert!(
                matches!(err, Error::ControllerAddress { .. }),
                "{addr}: {err}"
            );
        }
    }

    #[test]
    fn ssl_needs_the_nodes_tls_files_and_checks_the_hosts_name() {
        let err = call_with(
            "ssl:127.0.0.1:1",
            None,
            &Request::Status { node: None },
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "tls", .. }),
            "{err}"
        );
        assert_eq!(host_of("controller.example:6654"), "controller.example");
        assert_eq!(host_of("[::1]:6654"), "::1");
        assert_eq!(host_of("10.0.0.5:6654"), "10.0.0.5");
    }
}
