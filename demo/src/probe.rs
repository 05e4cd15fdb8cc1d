//! Connectivity probes run from inside pod and node namespaces: ICMP through `ping`, TCP
//! through a small echo server and client that enter the namespace on their own OS thread
//! (setns changes only the calling thread, so the rest of the process is untouched).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::Error;

/// The port the echo servers listen on inside every pod.
pub const ECHO_PORT: u16 = 7777;

fn enter(netns: &Path) -> Result<(), String> {
    let file = std::fs::File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", netns.display()))
}

/// A TCP echo server inside a namespace; stops when dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts a server on 0.0.0.0:[`ECHO_PORT`] inside the namespace at `netns`.
    pub fn start(netns: &Path) -> Result<EchoServer, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path: PathBuf = netns.into();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let listener = enter(&path).and_then(|()| {
                let l = TcpListener::bind(("0.0.0.0", ECHO_PORT))
                    .map_err(|e| format!("bind :{ECHO_PORT}: {e}"))?;
                l.set_nonblocking(true)
                    .map_err(|e| format!("nonblocking: {e}"))?;
                Ok(l)
            });
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 256];
                        if let Ok(n) = stream.read(&mut buf) {
                            let _ = stream.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(EchoServer {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(Error::Probe(format!(
                "echo server in {}: {e}",
                netns.display()
            ))),
            Err(_) => Err(Error::Probe(format!(
                "echo server in {} died while starting",
                netns.display()
            ))),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens a TCP connection from inside `netns` to `dst`:[`ECHO_PORT`], sends a line and
/// checks it comes back. Returns why not, if it did not.
pub fn tcp_echo(netns: &Path, dst: Ipv4Addr) -> Result<(), String> {
    let path: PathBuf = netns.into();
    let handle = std::thread::spawn(move || -> Result<(), String> {
        enter(&path)?;
        let addr = SocketAddr::from((dst, ECHO_PORT));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let message = b"switchyard says hello\n";
        stream
            .write_all(message)
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < message.len() {
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("read from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got == message {
            Ok(())
        } else {
            Err(format!(
                "{addr} echoed {} bytes, not the message",
                got.len()
            ))
        }
    });
    handle
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

/// Pings `dst` once from inside the namespace named `netns_name`, up to `attempts` times
/// (the first packet of a flow may wait on ARP).
pub fn ping(netns_name: &str, dst: Ipv4Addr, attempts: u32) -> Result<(), String> {
    let dst = dst.to_string();
    let mut last = String::new();
    for _ in 0..attempts.max(1) {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", netns_name, "ping", "-n", "-q", "-c", "1", "-W", "2", &dst,
            ])
            .output()
            .map_err(|e| format!("cannot run ping: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("packet loss"))
            .unwrap_or("no reply")
            .trim()
            .to_owned();
    }
    Err(format!("ping {dst}: {last}"))
}
