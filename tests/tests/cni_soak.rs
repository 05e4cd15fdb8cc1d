//! Churn soak: CNI ADD/DEL cycles over many pods of one node, on the real controller and the
//! real OVS of a [`CniNode`], with the faults a node meets in production injected among them:
//!
//! - the plugin SIGKILLed in the middle of an ADD (the runtime then DELs the sandbox),
//! - the controller killed (SIGKILL, by PID) and restarted, idle or in the middle of an ADD;
//!   the DELs it misses fail and the runtime retries them until one succeeds,
//! - a DEL with the wrong network namespace (another pod's, or one that does not exist),
//! - ovs-vswitchd killed and restarted.
//!
//! The test plays the container runtime: it remembers which sandbox each pod has and what
//! address its ADD returned, and retries failed DELs as CNI SPEC.md requires of a runtime.
//! Every few hundred cycles, and at the end, it waits (generously) until the node agrees with
//! that memory and counts what does not: addresses the controller holds for pods that are not
//! up (admin API ListPods), OVSDB ports and interfaces, host veths, pod flows by cookie; and
//! at the end every pod that should be up must answer a ping from an anchor pod. The judges
//! are ovs-vsctl, ovs-ofctl, `ip link` and ping; no timing is asserted.
//!
//! Size: `SWITCHYARD_SOAK_CYCLES` (default 200 for the short form CI runs, 10,000 for the
//! ignored long form), `SWITCHYARD_SOAK_PODS` (default 20 and 100), `SWITCHYARD_SOAK_SEED`
//! (the pseudo-random schedule's seed; printed, so a failing run can be replayed).
//! Long form: `cargo test -p switchyard-tests --test cni_soak -- --ignored --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use switchyard::admin::{client, proto};
use switchyard_cni::api::host_iface_name;
use switchyard_tests::Netns;
use switchyard_tests::cni_node::{CniNode, ShimOutput};

const NAMESPACE: &str = "soak";
/// How long the node may take to agree with the runtime after a fault (it takes seconds).
const CONVERGE: Duration = Duration::from_secs(90);

/// xorshift64*: a deterministic schedule from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True once in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A sandbox the runtime believes is up: its container id and the address ADD returned.
#[derive(Debug, Clone)]
struct Sandbox {
    container: String,
    ip: Ipv4Addr,
}

struct Pod {
    name: String,
    netns: Netns,
    sandbox: Option<Sandbox>,
    generation: u32,
}

/// A DEL the runtime owes the plugin: it failed (the controller was down) and is retried.
struct PendingDel {
    pod: usize,
    container: String,
}

#[derive(Default, Debug)]
struct Stats {
    adds: u64,
    dels: u64,
    del_retries: u64,
    killed_adds: u64,
    killed_adds_that_had_finished: u64,
    controller_restarts: u64,
    controller_kills_mid_add: u64,
    vswitchd_restarts: u64,
    wrong_netns_dels: u64,
    checks: u64,
    /// Commands that failed although nothing was injected: each is a finding.
    unexpected: Vec<String>,
}

/// What one check found that the runtime does not expect.
#[derive(Default, Debug, PartialEq)]
struct Leaks {
    addresses: usize,
    ports: usize,
    interfaces: usize,
    veths: usize,
    flows: usize,
    missing: Vec<String>,
}

impl Leaks {
    fn none(&self) -> bool {
        *self == Leaks::default()
    }
}

struct Soak {
    node: CniNode,
    pods: Vec<Pod>,
    pending: Vec<PendingDel>,
    rng: Rng,
    stats: Stats,
    controller_up: bool,
    rt: tokio::runtime::Runtime,
    /// br-int's ports and the Interface rows before any pod (the gateway and the like).
    own_ports: BTreeSet<String>,
    own_interfaces: BTreeSet<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Soak {
    fn start(pods: usize, seed: u64) -> Soak {
        let names: Vec<String> = (0..pods).map(|i| format!("p{i:03}")).collect();
        let refs: Vec<(&str, &str)> = names.iter().map(|n| (NAMESPACE, n.as_str())).collect();
        let node = CniNode::start(&refs);
        let own_ports = all_ports(&node);
        let own_interfaces = all_interfaces(&node);
        let pods = names
            .into_iter()
            .map(|name| Pod {
                name,
                netns: Netns::new("sk"),
                sandbox: None,
                generation: 0,
            })
            .collect();
        Soak {
            node,
            pods,
            pending: Vec::new(),
            rng: Rng(seed | 1),
            stats: Stats::default(),
            controller_up: true,
            own_ports,
            own_interfaces,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
        }
    }

    fn pod_ref(&self, i: usize) -> String {
        format!("{NAMESPACE}/{}", self.pods[i].name)
    }

    fn netns_path(&self, i: usize) -> String {
        self.pods[i].netns.path().display().to_string()
    }

    fn new_container(&mut self, i: usize) -> String {
        self.pods[i].generation += 1;
        format!("sk-{}-{}", self.pods[i].name, self.pods[i].generation)
    }

    fn unexpected(&mut self, what: String, out: &ShimOutput) {
        eprintln!(
            "soak: UNEXPECTED {what}: {} {}",
            out.stdout.trim(),
            out.stderr.trim()
        );
        self.stats.unexpected.push(format!(
            "{what}: {} ({})",
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }

    /// ADD of a new sandbox for pod `i`; on failure the runtime DELs it.
    fn add(&mut self, i: usize) {
        let container = self.new_container(i);
        let (pod, netns) = (self.pod_ref(i), self.netns_path(i));
        let out = self.node.shim_run("ADD", &pod, &container, &netns, &[]);
        self.stats.adds += 1;
        if out.success {
            self.record_up(i, container, &out);
        } else {
            if self.controller_up {
                self.unexpected(format!("ADD {pod} {container}"), &out);
            }
            self.runtime_del(i, container, None);
        }
    }

    fn record_up(&mut self, i: usize, container: String, out: &ShimOutput) {
        let result = out.json();
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ADD result without an address: {result}"));
        self.pods[i].sandbox = Some(Sandbox { container, ip });
    }

    /// The runtime stops pod `i`'s sandbox `container`: DEL (with `netns`, or the pod's own),
    /// retried later while it fails.
    fn runtime_del(&mut self, i: usize, container: String, netns: Option<String>) {
        let netns = netns.unwrap_or_else(|| self.netns_path(i));
        let pod = self.pod_ref(i);
        let out = self.node.shim_run("DEL", &pod, &container, &netns, &[]);
        self.stats.dels += 1;
        if self.pods[i]
            .sandbox
            .as_ref()
            .is_some_and(|s| s.container == container)
        {
            self.pods[i].sandbox = None;
        }
        if !out.success {
            if self.controller_up {
                self.unexpected(format!("DEL {pod} {container}"), &out);
            }
            self.pending.push(PendingDel { pod: i, container });
        }
    }

    fn retry_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for del in pending {
            let (pod, netns) = (self.pod_ref(del.pod), self.netns_path(del.pod));
            let out = self.node.shim_run("DEL", &pod, &del.container, &netns, &[]);
            self.stats.del_retries += 1;
            if !out.success {
                if self.controller_up {
                    self.unexpected(format!("DEL retry {pod} {}", del.container), &out);
                }
                self.pending.push(del);
            }
        }
    }

    /// The plugin is SIGKILLed `delay` into an ADD; the runtime sees a failed ADD (unless it
    /// finished first) and DELs the sandbox.
    fn killed_add(&mut self, i: usize) {
        let container = self.new_container(i);
        let (pod, netns) = (self.pod_ref(i), self.netns_path(i));
        let stdin = self.node.conf(&[]);
        let mut child = self
            .node
            .shim_spawn("ADD", &pod, &container, &netns, &stdin);
        // Anywhere from before the veth exists to the pod-side configuration.
        std::thread::sleep(Duration::from_micros(self.rng.below(120_000)));
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait for the killed shim");
        self.stats.adds += 1;
        self.stats.killed_adds += 1;
        if out.status.success() {
            self.stats.killed_adds_that_had_finished += 1;
            let out = ShimOutput {
                success: true,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::new(),
            };
            self.record_up(i, container, &out);
        } else {
            self.runtime_del(i, container, None);
        }
    }

    /// A DEL whose CNI_NETNS is another pod's namespace or no namespace at all: the shim must
    /// still remove this sandbox (found by container id) and nothing of the other pod.
    fn wrong_netns_del(&mut self, i: usize) {
        let Some(sandbox) = self.pods[i].sandbox.clone() else {
            return;
        };
        let other = (i + 1 + self.rng.below(self.pods.len() as u64 - 1) as usize) % self.pods.len();
        let netns = if self.rng.one_in(2) && other != i {
            self.netns_path(other)
        } else {
            "/run/netns/sysk-no-such-netns".to_owned()
        };
        self.stats.wrong_netns_dels += 1;
        self.runtime_del(i, sandbox.container, Some(netns));
    }

    /// One cycle on pod `i`: its sandbox ends (DEL, now and then with a wrong netns) and,
    /// mostly, a new one starts (ADD, now and then with the plugin killed midway).
    fn cycle(&mut self, i: usize) {
        if let Some(sandbox) = self.pods[i].sandbox.clone() {
            if self.rng.one_in(10) {
                self.wrong_netns_del(i);
            } else {
                self.runtime_del(i, sandbox.container, None);
            }
            if self.rng.one_in(4) {
                return;
            }
        }
        if self.rng.one_in(15) {
            self.killed_add(i);
        } else {
            self.add(i);
        }
    }

    fn restart_controller(&mut self, mid_add: Option<usize>) {
        match mid_add {
            Some(i) => {
                // Killed while an ADD waits on it: the ADD fails and the runtime's DEL
                // cannot reach it either. (A pod that is up restarts: DEL first.)
                if let Some(sandbox) = self.pods[i].sandbox.clone() {
                    self.runtime_del(i, sandbox.container, None);
                }
                let container = self.new_container(i);
                let (pod, netns) = (self.pod_ref(i), self.netns_path(i));
                let stdin = self.node.conf(&[]);
                let child = self
                    .node
                    .shim_spawn("ADD", &pod, &container, &netns, &stdin);
                std::thread::sleep(Duration::from_micros(self.rng.below(30_000)));
                self.node.stop_controller();
                self.controller_up = false;
                self.stats.controller_kills_mid_add += 1;
                self.stats.adds += 1;
                let out = child.wait_with_output().expect("wait for the shim");
                if out.status.success() {
                    let out = ShimOutput {
                        success: true,
                        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                        stderr: String::new(),
                    };
                    self.record_up(i, container, &out);
                } else {
                    self.runtime_del(i, container, None);
                }
            }
            None => {
                self.node.stop_controller();
                self.controller_up = false;
            }
        }
        // While it is down: the runtime keeps working, and every command fails.
        for _ in 0..3 {
            let i = 1 + self.rng.below(self.pods.len() as u64 - 1) as usize;
            match self.pods[i].sandbox.clone() {
                Some(s) => self.runtime_del(i, s.container, None),
                None => self.add(i),
            }
        }
        self.node.start_controller();
        self.controller_up = true;
        self.stats.controller_restarts += 1;
        self.retry_pending();
    }

    fn restart_vswitchd(&mut self) {
        let ovs = self.node.ovs.testbed();
        ovs.kill_vswitchd().expect("kill ovs-vswitchd");
        ovs.start_vswitchd().expect("start ovs-vswitchd");
        self.stats.vswitchd_restarts += 1;
    }

    fn expected(&self) -> BTreeMap<String, Sandbox> {
        self.pods
            .iter()
            .filter_map(|p| p.sandbox.clone().map(|s| (p.name.clone(), s)))
            .collect()
    }

    /// Pod flow cookies on br-int: address → number of flows.
    fn pod_flows(&self) -> BTreeMap<Ipv4Addr, usize> {
        let category = switchyard::ids::pod_cookie(Ipv4Addr::UNSPECIFIED);
        let dump = self.node.ovs.ofctl(
            "dump-flows",
            "br-int",
            &[
                "--no-stats",
                &format!("cookie={category:#x}/0xff00000000000000"),
            ],
        );
        let mut flows = BTreeMap::new();
        for line in dump.lines() {
            let Some(cookie) = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .find_map(|f| f.strip_prefix("cookie=0x"))
                .and_then(|c| u64::from_str_radix(c, 16).ok())
            else {
                continue;
            };
            *flows.entry(Ipv4Addr::from(cookie as u32)).or_insert(0) += 1;
        }
        flows
    }

    /// The controller's attachments (admin API ListPods): pod name → (container id, address).
    fn attachments(&self) -> Result<BTreeMap<String, (String, Ipv4Addr)>, String> {
        let server = format!("unix:{}/admin.sock", self.node.dir().display());
        self.rt.block_on(async {
            let mut api = client::connect(&server, None)
                .await
                .map_err(|e| format!("admin API: {e}"))?;
            let pods = api
                .list_pods(proto::ListPodsRequest {
                    namespace: NAMESPACE.into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("ListPods: {e}"))?
                .into_inner()
                .pods;
            Ok(pods
                .into_iter()
                .filter(|p| !p.ip.is_empty())
                .filter_map(|p| Some((p.name, (p.container_id, p.ip.parse().ok()?))))
                .collect())
        })
    }

    /// Compares the node with what the runtime expects, once.
    fn compare(&self) -> Leaks {
        let want = self.expected();
        let want_ifaces: BTreeSet<String> = want
            .values()
            .map(|s| host_iface_name(&s.container, "eth0"))
            .collect();
        let want_ips: BTreeSet<Ipv4Addr> = want.values().map(|s| s.ip).collect();
        let mut leaks = Leaks::default();
        let mut diff = |what: &str, have: BTreeSet<String>, want: &BTreeSet<String>| -> usize {
            for m in want.difference(&have) {
                leaks.missing.push(format!("{what} {m}"));
            }
            for l in have.difference(want) {
                eprintln!("soak: leaked {what} {l}");
            }
            have.difference(want).count()
        };
        // Everything beyond the node's own, whatever its name: a leak need not look like ours.
        let ports = &all_ports(&self.node) - &self.own_ports;
        leaks.ports = diff("port", ports, &want_ifaces);
        let interfaces = &all_interfaces(&self.node) - &self.own_interfaces;
        leaks.interfaces = diff("interface", interfaces, &want_ifaces);
        let veths: BTreeSet<String> = self
            .node
            .ovs
            .netns
            .exec(&["ip", "-o", "link", "show", "type", "veth"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        leaks.veths = diff("veth", veths, &want_ifaces);
        let flows = self.pod_flows();
        let flow_ips: BTreeSet<String> = flows.keys().map(ToString::to_string).collect();
        let want_ip_names: BTreeSet<String> = want_ips.iter().map(ToString::to_string).collect();
        leaks.flows = diff("flows of", flow_ips, &want_ip_names);
        // Every up pod has the same full set of flows (the first pod's count).
        let counts: BTreeSet<usize> = want_ips
            .iter()
            .filter_map(|ip| flows.get(ip))
            .copied()
            .collect();
        if counts.len() > 1 {
            leaks
                .missing
                .push(format!("pods differ in flow count: {counts:?}"));
        }
        match self.attachments() {
            Ok(attached) => {
                for (name, (container, ip)) in &attached {
                    match want.get(name) {
                        Some(s) if s.container == *container && s.ip == *ip => {}
                        Some(s) => leaks.missing.push(format!(
                            "attachment of {name}: controller has {container} {ip}, runtime {} {}",
                            s.container, s.ip
                        )),
                        None => leaks.addresses += 1,
                    }
                }
                for name in want.keys().filter(|n| !attached.contains_key(*n)) {
                    leaks.missing.push(format!("attachment of {name}"));
                }
                let ips: BTreeSet<Ipv4Addr> = attached.values().map(|(_, ip)| *ip).collect();
                if ips.len() != attached.len() {
                    leaks.missing.push("two pods share an address".into());
                }
            }
            Err(e) => leaks.missing.push(e),
        }
        leaks
    }

    /// Waits until the node agrees with the runtime; panics with what differs after
    /// [`CONVERGE`]. Returns the counts of the last comparison (all zero).
    fn converge(&mut self, when: &str) {
        let started = Instant::now();
        while !self.pending.is_empty() && started.elapsed() < CONVERGE {
            self.retry_pending();
            if !self.pending.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        assert!(
            self.pending.is_empty(),
            "{when}: {} DELs still fail after {CONVERGE:?}",
            self.pending.len()
        );
        let mut last = self.compare();
        while !last.none() && started.elapsed() < CONVERGE {
            std::thread::sleep(Duration::from_millis(250));
            last = self.compare();
        }
        self.stats.checks += 1;
        assert!(
            last.none(),
            "{when}: the node does not agree with the runtime after {CONVERGE:?}: {last:?}\nstats: {:?}\ncontroller log tail:\n{}",
            self.stats,
            tail(&self.node.controller_log(), 60)
        );
        eprintln!(
            "soak: {when}: {} pods up, leaked addresses=0 ports=0 interfaces=0 veths=0 flows=0 ({:.1} s to agree)",
            self.expected().len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Every up pod answers a ping from pod 0 (kept up throughout). Returns the unreachable.
    fn unreachable(&self) -> Vec<String> {
        let anchor = &self.pods[0];
        assert!(anchor.sandbox.is_some(), "the anchor pod is down");
        let mut failed = Vec::new();
        for pod in self.pods.iter().skip(1) {
            let Some(s) = &pod.sandbox else { continue };
            let ip = s.ip.to_string();
            let answered = switchyard_tests::wait_for(Duration::from_secs(20), || {
                anchor
                    .netns
                    .exec_output(&["ping", "-c", "1", "-W", "1", &ip])
                    .status
                    .success()
            });
            if answered.is_none() {
                failed.push(format!("{} ({ip})", pod.name));
            }
        }
        failed
    }
}

/// Every port of br-int.
fn all_ports(node: &CniNode) -> BTreeSet<String> {
    node.vsctl(&["list-ports", "br-int"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The name of every Interface row.
fn all_interfaces(node: &CniNode) -> BTreeSet<String> {
    node.vsctl(&["--bare", "--columns=name", "list", "Interface"])
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn soak(default_cycles: u64, default_pods: u64) {
    let cycles = env_u64("SWITCHYARD_SOAK_CYCLES", default_cycles);
    let pods = env_u64("SWITCHYARD_SOAK_PODS", default_pods).max(3) as usize;
    let seed = env_u64("SWITCHYARD_SOAK_SEED", 0x5eed_50a6);
    // A budget in seconds ends the cycling early (the checks at the end still run): the long
    // form on a busy machine.
    let budget = std::env::var("SWITCHYARD_SOAK_SECONDS")
        .ok()
        .map(|_| Duration::from_secs(env_u64("SWITCHYARD_SOAK_SECONDS", 0)));
    eprintln!("soak: {cycles} cycles over {pods} pods, seed {seed}, budget {budget:?}");
    let started = Instant::now();
    let mut soak = Soak::start(pods, seed);
    // Every pod up first; pod 0 stays up as the ping anchor.
    for i in 0..pods {
        soak.add(i);
    }
    soak.converge("all pods added");
    let controller_every = (cycles / 4).clamp(40, 400);
    let vswitchd_every = (cycles / 3).clamp(50, 500);
    let check_every = (cycles / 4).clamp(50, 500);
    let mut done = 0;
    for cycle in 1..=cycles {
        if budget.is_some_and(|b| started.elapsed() > b) {
            eprintln!("soak: time budget spent after {done} cycles");
            break;
        }
        done = cycle;
        let i = 1 + soak.rng.below(pods as u64 - 1) as usize;
        if cycle % controller_every == controller_every / 2 {
            let mid_add = (soak.stats.controller_restarts % 2 == 1).then_some(i);
            soak.restart_controller(mid_add);
        } else {
            if cycle % vswitchd_every == 0 {
                soak.restart_vswitchd();
            }
            soak.cycle(i);
        }
        if cycle % check_every == 0 {
            soak.converge(&format!(
                "cycle {cycle} ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    soak.converge("the end");
    let unreachable = soak.unreachable();
    let up = soak.expected().len();
    eprintln!(
        "soak: done in {:.0} s: {done} of {cycles} cycles, {up} pods up, {} unreachable; {:?}",
        started.elapsed().as_secs_f64(),
        unreachable.len(),
        soak.stats
    );
    assert!(
        unreachable.is_empty(),
        "up pods that do not answer a ping from the anchor: {unreachable:?}"
    );
    assert!(
        soak.stats.unexpected.is_empty(),
        "commands failed with nothing injected: {:#?}",
        soak.stats.unexpected
    );
}

/// The short form CI runs: a few hundred cycles, every fault at least twice.
#[test]
fn cni_churn_soak_short() {
    switchyard_tests::skip_unless_root!();
    soak(200, 20);
}

/// The long form: 10,000 cycles over 100 pods (about an hour of a 2-core machine).
#[test]
#[ignore = "long: run with --ignored (SWITCHYARD_SOAK_CYCLES sizes it)"]
fn cni_churn_soak_long() {
    switchyard_tests::skip_unless_root!();
    soak(10_000, 100);
}
