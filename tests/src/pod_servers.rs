//! Servers inside a pod's network namespace that answer with a name, for the end-to-end
//! tests that check who a connection reached (NetworkPolicy, Services): a TCP connection
//! gets the name back for every line it sends (so an established connection can be checked
//! again later), a UDP datagram one datagram with the name.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one server listens on (every address of the pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP port.
    Tcp(u16),
    /// A UDP port.
    Udp(u16),
}

/// Running servers; dropping them stops every one.
pub struct PodServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl PodServers {
    /// Starts one server per `(listen, answer)` in the network namespace at `netns`, and
    /// returns once every one is bound. Panics if one cannot be (a test's setup failed).
    pub fn start(netns: PathBuf, servers: Vec<(Listen, String)>) -> PodServers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (listen, answer) in servers.iter().cloned() {
            let (netns, stop, ready) = (netns.clone(), stop.clone(), ready_tx.clone());
            threads.push(std::thread::spawn(move || {
                enter(&netns).expect("enter pod netns");
                match listen {
                    Listen::Tcp(port) => {
                        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
                        l.set_nonblocking(true).expect("nonblocking");
                        ready.send(()).ok();
                        while !stop.load(Ordering::Relaxed) {
                            match l.accept() {
                                Ok((s, _)) => {
                                    let (answer, stop) = (answer.clone(), stop.clone());
                                    std::thread::spawn(move || serve_tcp(s, &answer, &stop));
                                }
                                Err(_) => std::thread::sleep(Duration::from_millis(10)),
                            }
                        }
                    }
                    Listen::Udp(port) => {
                        let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
                        s.set_read_timeout(Some(Duration::from_millis(100))).ok();
                        ready.send(()).ok();
                        let mut buf = [0u8; 64];
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok((_, from)) = s.recv_from(&mut buf) {
                                let _ = s.send_to(answer.as_bytes(), from);
                            }
                        }
                    }
                }
            }));
        }
        for _ in 0..servers.len() {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("servers start");
        }
        PodServers { stop, threads }
    }
}

impl Drop for PodServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(s: TcpStream, answer: &str, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if w.write_all(format!("{answer}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Moves the calling thread into the network namespace at `netns`.
pub fn enter(netns: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(netns)?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `f` on a new thread inside the network namespace at `netns`, on a current-thread
/// tokio runtime.
pub fn in_netns<T: Send + 'static>(
    netns: PathBuf,
    f: impl AsyncFnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        enter(&netns).expect("enter the network namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}
