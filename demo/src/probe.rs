//! The demo's probes (the probe contract, README "--json"): servers that answer with their owner's name and the
//! peer address they saw, and clients that try one connection and say what happened.
//!
//! Servers and clients enter a network namespace on their own OS thread (setns changes only
//! the calling thread, so the rest of the process is untouched). ICMP goes through `ping`.
//!
//! Wire format of an answer (TCP, UDP, SCTP alike): one line `NAME PEER_IP\n`, sent by the
//! server as soon as a connection is accepted (TCP, SCTP) or for each datagram (UDP).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, SockAddr, Socket, Type};
use switchyard::policy::Protocol;

use crate::Error;

/// The port a pod that declares no containerPort serves (TCP).
pub const DEFAULT_POD_PORT: u16 = 80;
/// The port each node's host network serves, where a kubelet would (TCP).
pub const KUBELET_PORT: u16 = 10250;
/// The port the external client serves (TCP).
pub const EXTERNAL_PORT: u16 = 80;
/// How long a probe waits for a connection and for its answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
const SCTP: i32 = 132;

/// What a probe speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeProtocol {
    /// ICMP echo (`port` 0).
    Icmp,
    /// A transport protocol.
    L4(Protocol),
}

impl ProbeProtocol {
    /// `ICMP`, `TCP`, `UDP` or `SCTP`, as the probe contract spells them.
    pub fn name(self) -> &'static str {
        match self {
            ProbeProtocol::Icmp => "ICMP",
            ProbeProtocol::L4(p) => p.name(),
        }
    }
}

/// Whether this kernel offers SCTP sockets (many do not: EPROTONOSUPPORT).
pub fn sctp_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Socket::new(
            Domain::IPV4,
            Type::STREAM,
            Some(socket2::Protocol::from(SCTP)),
        )
        .is_ok()
    })
}

/// Enters the network namespace at `netns` on the calling thread.
pub fn enter(netns: &Path) -> Result<(), String> {
    let file = std::fs::File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", netns.display()))
}

/// Servers inside one namespace, one per (protocol, port); stop when dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Starts a server for each of `ports` inside the namespace at `netns`, answering as
    /// `name`. SCTP ports are skipped when the kernel has no SCTP (the caller says so).
    pub fn start(netns: &Path, name: &str, ports: &[(Protocol, u16)]) -> Result<Servers, Error> {
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for &(protocol, port) in ports {
            if protocol == Protocol::Sctp && !sctp_supported() {
                continue;
            }
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let path: PathBuf = netns.into();
            let stop = servers.stop.clone();
            let owner = name.to_owned();
            servers.threads.push(std::thread::spawn(move || {
                let bound = enter(&path).and_then(|()| Listener::bind(protocol, port));
                match bound {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l.serve(&owner, &stop);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            }));
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(Error::Probe(format!(
                        "{} server {}/{port} in {}: {e}",
                        name,
                        protocol.name(),
                        netns.display()
                    )));
                }
                Err(_) => {
                    return Err(Error::Probe(format!(
                        "{name} server in {} died while starting",
                        netns.display()
                    )));
                }
            }
        }
        Ok(servers)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Sctp(Socket),
}

impl Listener {
    fn bind(protocol: Protocol, port: u16) -> Result<Listener, String> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let what = |e: std::io::Error| format!("bind {}/{port}: {e}", protocol.name());
        let l = match protocol {
            Protocol::Tcp => {
                let l = TcpListener::bind(addr).map_err(what)?;
                l.set_nonblocking(true).map_err(what)?;
                Listener::Tcp(l)
            }
            Protocol::Udp => {
                let s = UdpSocket::bind(addr).map_err(what)?;
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .map_err(what)?;
                Listener::Udp(s)
            }
            Protocol::Sctp => {
                let s = Socket::new(
                    Domain::IPV4,
                    Type::STREAM,
                    Some(socket2::Protocol::from(SCTP)),
                )
                .map_err(what)?;
                s.set_reuse_address(true).map_err(what)?;
                s.bind(&addr.into()).map_err(what)?;
                s.listen(64).map_err(what)?;
                s.set_nonblocking(true).map_err(what)?;
                Listener::Sctp(s)
            }
        };
        Ok(l)
    }

    fn serve(self, name: &str, stop: &AtomicBool) {
        let answer = |peer: Option<SocketAddr>| {
            let ip = peer.map_or_else(|| "?".to_owned(), |p| p.ip().to_string());
            format!("{name} {ip}\n")
        };
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            match &self {
                Listener::Tcp(l) => match l.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(answer(Some(peer)).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                },
                Listener::Udp(s) => {
                    if let Ok((_, peer)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(answer(Some(peer)).as_bytes(), peer);
                    }
                }
                Listener::Sctp(l) => match l.accept() {
                    Ok((s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = (&s).write_all(answer(peer.as_socket()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                },
            }
        }
    }
}

/// What one try saw (the fields of a probe line that depend on the network).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// An answer came back from a server (ICMP: an echo reply).
    pub connected: bool,
    /// The name inside the answer (none for ICMP: an echo reply carries no name).
    pub answered_by: Option<String>,
    /// The client socket's own address.
    pub from_ip: Option<Ipv4Addr>,
    /// The peer address the server reported.
    pub seen_source: Option<Ipv4Addr>,
    /// `refused`, `timeout`, `unreachable`, `reset` or `other` when not connected.
    pub error: Option<&'static str>,
}

impl Outcome {
    fn failed(error: &'static str, from_ip: Option<Ipv4Addr>) -> Outcome {
        Outcome {
            error: Some(error),
            from_ip,
            ..Outcome::default()
        }
    }
}

/// The probe contract's error class of a socket error.
pub fn classify(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => return "refused",
        Some(libc::ETIMEDOUT) => return "timeout",
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => return "unreachable",
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => return "reset",
        _ => {}
    }
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "reset",
        _ => "other",
    }
}

/// The address this namespace's routing would send from to `dst` (a connected UDP socket
/// sends nothing). Call on a thread inside the namespace.
fn route_source(dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((dst, 9)).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

fn v4(addr: Option<SocketAddr>) -> Option<Ipv4Addr> {
    match addr? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

fn parse_answer(text: &str) -> Option<(String, Option<Ipv4Addr>)> {
    let line = text.lines().next()?;
    let (name, ip) = line.split_once(' ')?;
    Some((name.to_owned(), ip.trim().parse().ok()))
}

fn answered(text: &[u8], from_ip: Option<Ipv4Addr>) -> Outcome {
    match parse_answer(&String::from_utf8_lossy(text)) {
        Some((name, seen)) => Outcome {
            connected: true,
            answered_by: Some(name),
            from_ip,
            seen_source: seen,
            error: None,
        },
        None => Outcome::failed("other", from_ip),
    }
}

/// One try: a new connection (TCP, SCTP), a new connected socket (UDP) or one echo request
/// (ICMP) from the namespace at `netns` (named `netns_name` for `ip netns exec`) to
/// `dst`:`port`. Enters the namespace on the calling thread: call it on a thread of its own
/// (the demo's probe workers).
pub fn try_once(
    netns: &Path,
    netns_name: &str,
    dst: Ipv4Addr,
    protocol: ProbeProtocol,
    port: u16,
) -> Outcome {
    if enter(netns).is_err() {
        return Outcome::failed("other", None);
    }
    match protocol {
        ProbeProtocol::Icmp => ping(netns_name, dst),
        ProbeProtocol::L4(Protocol::Udp) => udp(dst, port),
        ProbeProtocol::L4(p) => stream(p, dst, port),
    }
}

fn stream(protocol: Protocol, dst: Ipv4Addr, port: u16) -> Outcome {
    let proto = match protocol {
        Protocol::Sctp => socket2::Protocol::from(SCTP),
        _ => socket2::Protocol::TCP,
    };
    let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(proto)) {
        Ok(s) => s,
        Err(_) => return Outcome::failed("other", route_source(dst)),
    };
    let addr = SockAddr::from(SocketAddrV4::new(dst, port));
    if let Err(e) = socket.connect_timeout(&addr, TIMEOUT) {
        let from = socket
            .local_addr()
            .ok()
            .and_then(|a| v4(a.as_socket()))
            .or_else(|| route_source(dst));
        return Outcome::failed(classify(&e), from);
    }
    let from_ip = socket.local_addr().ok().and_then(|a| v4(a.as_socket()));
    let _ = socket.set_read_timeout(Some(TIMEOUT));
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match (&socket).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Outcome::failed(classify(&e), from_ip),
        }
    }
    if got.is_empty() {
        return Outcome::failed("reset", from_ip);
    }
    answered(&got, from_ip)
}

fn udp(dst: Ipv4Addr, port: u16) -> Outcome {
    let socket = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(_) => return Outcome::failed("other", None),
    };
    if let Err(e) = socket.connect((dst, port)) {
        return Outcome::failed(classify(&e), route_source(dst));
    }
    let from_ip = v4(socket.local_addr().ok());
    // UDP has no retransmission of its own: the datagram goes again every third of the
    // timeout, as a DNS client would (the first packet of a flow may be lost, e.g. while the
    // userspace datapath resolves a tunnel's underlay neighbour).
    let _ = socket.set_read_timeout(Some(TIMEOUT / 3));
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        if let Err(e) = socket.send(b"switchyard probe\n") {
            return Outcome::failed(classify(&e), from_ip);
        }
        // A connected UDP socket only delivers datagrams from `dst`:`port`: a reply from
        // any other address (a missing reverse NAT) never arrives here, and times out.
        match socket.recv(&mut buf) {
            Ok(n) => return answered(&buf[..n], from_ip),
            Err(e) => match classify(&e) {
                "timeout" => {}
                other => return Outcome::failed(other, from_ip),
            },
        }
    }
    Outcome::failed("timeout", from_ip)
}

fn ping(netns_name: &str, dst: Ipv4Addr) -> Outcome {
    let from_ip = route_source(dst);
    // One reply wanted; a request every half second until the 2 s deadline (the first may
    // be lost, as for UDP).
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns_name, "ping", "-n", "-q", "-c", "1"])
        .args(["-i", "0.5", "-w", "2"])
        .arg(dst.to_string())
        .stdin(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return Outcome::failed("other", from_ip);
    };
    if out.status.success() {
        return Outcome {
            connected: true,
            from_ip,
            ..Outcome::default()
        };
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let error = if text.contains("nreachable") {
        "unreachable"
    } else if out.status.code() == Some(1) {
        "timeout"
    } else {
        "other"
    };
    Outcome::failed(error, from_ip)
}

/// Pings `dst` once from inside the namespace named `netns_name`, up to `attempts` times.
/// Returns why not, if no reply came.
pub fn ping_attempts(netns_name: &str, dst: Ipv4Addr, attempts: u32) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..attempts.max(1) {
        let out = ping(netns_name, dst);
        if out.connected {
            return Ok(());
        }
        last = out.error.unwrap_or("other").to_owned();
    }
    Err(format!("ping {dst}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_name_and_peer() {
        assert_eq!(
            parse_answer("x/b 10.244.1.2\n"),
            Some(("x/b".to_owned(), Some(Ipv4Addr::new(10, 244, 1, 2))))
        );
        assert_eq!(
            parse_answer("node:node-1 192.168.77.11\n"),
            Some((
                "node:node-1".to_owned(),
                Some(Ipv4Addr::new(192, 168, 77, 11))
            ))
        );
        assert_eq!(parse_answer("garbage"), None);
        let o = answered(b"external 198.51.100.1\n", Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(o.connected);
        assert_eq!(o.answered_by.as_deref(), Some("external"));
    }

    #[test]
    fn socket_errors_map_to_the_probe_contract() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::ECONNREFUSED)), "refused");
        assert_eq!(classify(&e(libc::EHOSTUNREACH)), "unreachable");
        assert_eq!(classify(&e(libc::ENETUNREACH)), "unreachable");
        assert_eq!(classify(&e(libc::ECONNRESET)), "reset");
        assert_eq!(classify(&e(libc::EAGAIN)), "timeout");
        assert_eq!(classify(&e(libc::EACCES)), "other");
    }
}
