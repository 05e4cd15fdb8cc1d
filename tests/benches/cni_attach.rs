//! Pod attach: `switchyard-cni` with the real controller against the reference `bridge` +
//! `host-local` plugins (Debian containernetworking-plugins, `/usr/lib/cni`), on the same
//! kind of node: a network namespace of its own, pods as network namespaces, each plugin
//! run as a runtime runs it (`ip netns exec NODE PLUGIN`, `CNI_*` variables, the
//! configuration on stdin). Ours has the node's own ovsdb-server and ovs-vswitchd (userspace
//! datapath) and the controller process (release builds); the peer a Linux bridge it makes
//! itself. Times are wall clock from spawning the plugin to its exit, as the runtime waits.
//!
//! Per round: 100 sequential ADDs (one pod after the other; the two plugins alternate pod
//! by pod, so both see the same load), 100 sequential DELs, then 100 concurrent ADDs and 100
//! concurrent DELs (batch time: first spawn to last exit). Before timing anything further,
//! every ADD must have succeeded and every DEL must have left the node clean.
//!
//! Run with `cargo bench -p switchyard-tests --bench cni_attach` (root). `CNI_ATTACH_PODS`
//! (default 100) and `CNI_ATTACH_ROUNDS` (default 1) change the size;
//! `CNI_ATTACH_CONTROLLER` / `CNI_ATTACH_SHIM` measure other builds (e.g. an older commit);
//! `CNI_ATTACH_LOGS=DIR` keeps the controller's and vswitchd's logs there, and runs the shim
//! with `SWITCHYARD_CNI_TIMING=1`: `DIR/shim-timing.log` then has one line per sequential
//! ADD/DEL of ours (its phases, and `wall_ms`, spawn to exit as timed here), and
//! `DIR/peer-timing.log` the peer's wall times.
//! The last line is the summary, ours/peer in the same run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::cni_node::CniNode;
use switchyard_tests::{Netns, require_root};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The release build of a workspace binary (benchmarks measure optimised code), or the
/// path in `env` if set.
fn release_binary(env: &str, package: &str, bin: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "--release", "-p", package, "--bin", bin])
        .current_dir(workspace())
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "building {bin} failed");
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"))
        .join("release")
        .join(bin)
}

/// The reference: `bridge` with `host-local` IPAM in a node namespace of its own.
struct Peer {
    node: Netns,
    conf: String,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn start() -> Peer {
        let node = Netns::new("cn");
        let dir = tempfile::Builder::new()
            .prefix("switchyard-bench-ipam-")
            .tempdir()
            .expect("temporary directory");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": "sybr0",
            "isGateway": true,
            "ipMasq": false,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "subnet": "10.253.0.0/16",
                "dataDir": dir.path().join("ipam").display().to_string(),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })
        .to_string();
        Peer {
            node,
            conf,
            _dir: dir,
        }
    }

    fn spawn(&self, command: &str, container: &str, netns: &Path) -> Child {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.node.name(), "/usr/lib/cni/bridge"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the bridge plugin");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(self.conf.as_bytes());
        }
        child
    }

    fn veths(&self) -> usize {
        self.node
            .exec(&["ip", "-o", "link", "show", "type", "veth"])
            .lines()
            .count()
    }
}

/// Which plugin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Ours,
    Peer,
}

struct Bench {
    ours: CniNode,
    peer: Peer,
    ours_pods: Vec<Netns>,
    peer_pods: Vec<Netns>,
    /// `CNI_ATTACH_LOGS`: the shim's phase times, and both plugins' wall times, kept here.
    timing: Option<std::cell::RefCell<(Vec<String>, Vec<String>)>>,
}

/// Waits for the plugin; its stderr.
fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait for the plugin");
    assert!(
        out.status.success(),
        "{what} failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Bench {
    fn pod_name(i: usize) -> String {
        format!("default/bench-{i}")
    }

    fn container(round: usize, phase: &str, i: usize) -> String {
        format!("r{round}{phase}{i:04}")
    }

    fn spawn(&self, who: Who, command: &str, round: usize, phase: &str, i: usize) -> Child {
        let container = Self::container(round, phase, i);
        match who {
            Who::Ours => {
                let netns = self.ours_pods[i].path().display().to_string();
                let env: &[(&str, &str)] = if self.timing.is_some() {
                    &[("SWITCHYARD_CNI_TIMING", "1")]
                } else {
                    &[]
                };
                self.ours.shim_spawn_with_env(
                    command,
                    &Self::pod_name(i),
                    &container,
                    &netns,
                    &self.ours.conf(&[]),
                    env,
                )
            }
            Who::Peer => self
                .peer
                .spawn(command, &container, &self.peer_pods[i].path()),
        }
    }

    /// One operation, timed.
    fn one(&self, who: Who, command: &str, round: usize, phase: &str, i: usize) -> Duration {
        let started = Instant::now();
        let child = self.spawn(who, command, round, phase, i);
        let stderr = finish(child, &format!("{who:?} {command} #{i}"));
        let took = started.elapsed();
        if let Some(timing) = &self.timing {
            let mut timing = timing.borrow_mut();
            match who {
                Who::Ours => {
                    for line in stderr.lines().filter(|l| l.contains(" timing: ")) {
                        timing.0.push(format!(
                            "round={round} pod={i} wall_ms={:.2} {line}",
                            ms(took)
                        ));
                    }
                }
                Who::Peer => timing.1.push(format!(
                    "round={round} pod={i} {command} wall_ms={:.2}",
                    ms(took)
                )),
            }
        }
        took
    }

    /// `n` operations at once; the batch's time.
    fn batch(&self, who: Who, command: &str, round: usize, phase: &str, n: usize) -> Duration {
        let started = Instant::now();
        let children: Vec<Child> = (0..n)
            .map(|i| self.spawn(who, command, round, phase, i))
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            finish(child, &format!("{who:?} concurrent {command} #{i}"));
        }
        started.elapsed()
    }

    fn assert_clean(&self) {
        assert!(
            switchyard_tests::wait_for(Duration::from_secs(10), || self.ours.ports().is_empty())
                .is_some(),
            "ours left ports: {:?}",
            self.ours.ports()
        );
        assert!(self.ours.veths().is_empty(), "ours left veths");
        assert_eq!(self.peer.veths(), 0, "the peer left veths");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (nearest rank) of `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    add_early: Vec<Duration>,
    add_late: Vec<Duration>,
    del: Vec<Duration>,
    conc_add: Vec<Duration>,
    conc_del: Vec<Duration>,
}

fn main() {
    require_root();
    let n: usize = std::env::var("CNI_ATTACH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(20);
    let rounds: usize = std::env::var("CNI_ATTACH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let controller = release_binary("CNI_ATTACH_CONTROLLER", "switchyard", "switchyard");
    let shim = release_binary("CNI_ATTACH_SHIM", "switchyard-cni", "switchyard-cni");
    println!(
        "controller {}, shim {}",
        controller.display(),
        shim.display()
    );
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let pods: Vec<(&str, &str)> = names.iter().map(|p| ("default", p.as_str())).collect();
    let bench = Bench {
        ours: CniNode::start_with(&pods, controller, shim),
        peer: Peer::start(),
        ours_pods: (0..n).map(|_| Netns::new("cn")).collect(),
        peer_pods: (0..n).map(|_| Netns::new("cn")).collect(),
        timing: std::env::var_os("CNI_ATTACH_LOGS").map(|_| Default::default()),
    };
    let mut ours = Samples::default();
    let mut peer = Samples::default();
    for round in 0..rounds {
        // Sequential: pod by pod, the two plugins alternating (who goes first alternates
        // by round).
        let order = if round % 2 == 0 {
            [Who::Ours, Who::Peer]
        } else {
            [Who::Peer, Who::Ours]
        };
        for i in 0..n {
            for who in order {
                let t = bench.one(who, "ADD", round, "s", i);
                let s = if who == Who::Ours {
                    &mut ours
                } else {
                    &mut peer
                };
                s.add.push(t);
                if i < 10 {
                    s.add_early.push(t);
                }
                if i >= n - 10 {
                    s.add_late.push(t);
                }
            }
        }
        assert_eq!(bench.ours.ports().len(), n, "ours: a port per pod");
        for i in 0..n {
            for who in order {
                let t = bench.one(who, "DEL", round, "s", i);
                if who == Who::Ours {
                    ours.del.push(t)
                } else {
                    peer.del.push(t)
                }
            }
        }
        bench.assert_clean();
        // Concurrent: each plugin on its own, the other idle.
        for who in order {
            let t = bench.batch(who, "ADD", round, "c", n);
            if who == Who::Ours {
                ours.conc_add.push(t)
            } else {
                peer.conc_add.push(t)
            }
        }
        assert_eq!(bench.ours.ports().len(), n, "ours: a port per pod");
        for who in order {
            let t = bench.batch(who, "DEL", round, "c", n);
            if who == Who::Ours {
                ours.conc_del.push(t)
            } else {
                peer.conc_del.push(t)
            }
        }
        bench.assert_clean();
        println!(
            "round {round}: conc ADD {:.0}/{:.0} ms, conc DEL {:.0}/{:.0} ms (ours/peer)",
            ms(*ours.conc_add.last().unwrap()),
            ms(*peer.conc_add.last().unwrap()),
            ms(*ours.conc_del.last().unwrap()),
            ms(*peer.conc_del.last().unwrap()),
        );
    }
    let row = |what: &str, a: Duration, b: Duration| {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.2}x |",
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
        a.as_secs_f64() / b.as_secs_f64()
    };
    println!("\n{n} pods, {rounds} round(s)\n");
    println!("| measure | switchyard-cni | bridge + host-local | ratio |");
    println!("| --- | --- | --- | --- |");
    let seq_p50 = row(
        "sequential ADD p50",
        quantile(&ours.add, 0.5),
        quantile(&peer.add, 0.5),
    );
    let seq_p99 = row(
        "sequential ADD p99",
        quantile(&ours.add, 0.99),
        quantile(&peer.add, 0.99),
    );
    row(
        "ADD p50, pods 1-10",
        quantile(&ours.add_early, 0.5),
        quantile(&peer.add_early, 0.5),
    );
    let late = row(
        &format!("ADD p50, pods {}-{n}", n - 9),
        quantile(&ours.add_late, 0.5),
        quantile(&peer.add_late, 0.5),
    );
    row(
        &format!("ADD p99, pods {}-{n}", n - 9),
        quantile(&ours.add_late, 0.99),
        quantile(&peer.add_late, 0.99),
    );
    let del_p50 = row(
        "sequential DEL p50",
        quantile(&ours.del, 0.5),
        quantile(&peer.del, 0.5),
    );
    row(
        "sequential DEL p99",
        quantile(&ours.del, 0.99),
        quantile(&peer.del, 0.99),
    );
    let conc_add = row(
        &format!("{n} concurrent ADDs (batch)"),
        quantile(&ours.conc_add, 0.5),
        quantile(&peer.conc_add, 0.5),
    );
    let conc_del = row(
        &format!("{n} concurrent DELs (batch)"),
        quantile(&ours.conc_del, 0.5),
        quantile(&peer.conc_del, 0.5),
    );
    if let Some(dir) = std::env::var_os("CNI_ATTACH_LOGS") {
        // For finding where the time goes: the controller's and vswitchd's logs.
        let dir = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("controller.log"), bench.ours.controller_log());
        let _ = std::fs::copy(
            bench.ours.ovs.dir().join("ovs-vswitchd.log"),
            dir.join("ovs-vswitchd.log"),
        );
        if let Some(timing) = &bench.timing {
            let (ours, peer) = &*timing.borrow();
            let _ = std::fs::write(dir.join("shim-timing.log"), ours.join("\n") + "\n");
            let _ = std::fs::write(dir.join("peer-timing.log"), peer.join("\n") + "\n");
        }
    }
    println!(
        "p3: seq_add_p50_ratio={seq_p50:.2} seq_add_p99_ratio={seq_p99:.2} late_pods_add_p50_ratio={late:.2} conc_add_ratio={conc_add:.2} conc_del_ratio={conc_del:.2} del_p50_ratio={del_p50:.2}"
    );
}
