//! P4 benchmark: iperf3 TCP through Switchyard's br-int pipeline against the same pods
//! behind a plain `NORMAL` flow table (the ceiling of this datapath), in one run.
//!
//! `cargo bench -p switchyard-tests --bench dataplane` (root; `SECS` (5, seconds per
//! iperf3 run after a 1 s warm-up it omits), `ROUNDS` (4) change it). Needs iperf3 and
//! what the demo needs; without them, or without root, it says so and measures nothing.
//!
//! The cluster is the demo's ([`DemoCluster`]: nodes as network namespaces on an underlay
//! switch, each with its own ovsdb-server and ovs-vswitchd on the userspace datapath, the
//! real `switchyard controller` process, pods created through the real CNI): two nodes,
//! pods `bench/client` and `bench/local` on node-1, `bench/remote` on node-2, and the
//! ClusterIP Service `bench/local-svc` (10.96.0.52:5201) whose only endpoint is `local`,
//! on the client's node (so the Service figure is the Service pipeline's cost against the
//! same-node path: the DNAT, its conntrack zone and the group, nothing else differs).
//! iperf3 servers listen on TCP 5201 in `local` and `remote`; the client runs
//! `iperf3 -c DST -t SECS -O 1 -J` and the figure is the receiver's Gbit/s.
//!
//! Three paths, each measured against its baseline:
//! - `same_node`: client → local's pod IP;
//! - `cross_node`: client → remote's pod IP (Geneve between the nodes);
//! - `service`: client → the ClusterIP (ours) against client → local's pod IP (baseline:
//!   NORMAL cannot DNAT, and the ceiling is the path to the endpoint).
//!
//! The baseline is the same namespaces, veths, ovs-vswitchd, bridge and ports with only
//! br-int's flow table replaced (`ovs-ofctl replace-flows`) by one flow per node:
//! `priority=0 actions=set_field:PEER->tun_dst,NORMAL`. `NORMAL` makes br-int a learning
//! L2 switch; the `set_field` is there because br-int's tunnel port `sy-tun0` is flow-based
//! (`remote_ip=flow`), so cross-node traffic rides the same Geneve port, the same br-phy
//! and the same underlay as ours, addressed to the other node (the only one: a learning
//! switch over a full mesh of tunnels would loop, hence two nodes). Pods on different
//! nodes are in different subnets, and their default route points at the gateway, whose
//! frames a plain L2 switch cannot route; so for the baseline each pod also gets an
//! on-link route for the cluster CIDR (`ip route replace CIDR dev eth0`, removed again
//! for ours) and ARPs for its peer directly, a flat L2 network over the tunnel. Ours is
//! L3 (gateway MAC rewrite, tunnel to the remote node), so this is the fairest "nothing
//! but switching" the same hardware path allows.
//!
//! To keep the controller from putting its flows back (its flow monitor reports foreign
//! changes at once), the controller process is stopped with SIGSTOP for the baseline
//! phases (fail_mode=secure: br-int keeps what it has) and resumed with SIGCONT after; it
//! then restores its flows, and the ours phase starts only when br-int's flow table is
//! again exactly the one saved before the first baseline (compared line by line, without
//! counters). A guard resumes it on every exit path, so the cluster's teardown (CNI DEL
//! through the controller) works even after a panic.
//!
//! Rounds alternate the order (ours first, then baseline first, …) so a drift in the
//! shared machine's load hits both alike. For each path the ratio is ours' mean over the
//! baseline's mean. After every run the datapath's own counters are read on the client's
//! node (`dpif-netdev/pmd-stats-show`: passes per packet, recirculations, megaflow hits,
//! upcalls) and `dpctl/dump-flows` (megaflows, recirculation ids), to explain a ratio.
//! The last line is `p4: same_node_ratio=X cross_node_ratio=Y service_ratio=Z`.
//! No figure is asserted: this is a measurement.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::pipeline::Encap;
use switchyard::source::ObjectKey;
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_tests::bench_core::{env_usize, host_load};
use switchyard_tests::workspace_binary;

const NS: &str = "bench";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 52);
const PORT: u16 = 5201;
const NODE_1: &str = "node-1";
const NODE_2: &str = "node-2";

fn cluster_yaml() -> String {
    let node = |name: &str, n: u8| {
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": format!("10.244.{n}.0/24"),
                "podCIDRs": [format!("10.244.{n}.0/24")]},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.77.1{n}")}]}})
    };
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "iperf", "image": "iperf3",
                "ports": [{"name": "iperf", "containerPort": PORT}]}]}})
    };
    let docs: Vec<Value> = vec![
        node(NODE_1, 1),
        node(NODE_2, 2),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        pod("client", NODE_1),
        pod("local", NODE_1),
        pod("remote", NODE_2),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "local-svc", "namespace": NS},
            "spec": {"type": "ClusterIP", "clusterIP": VIP.to_string(),
                "clusterIPs": [VIP.to_string()], "selector": {"app": "local"},
                "ports": [{"name": "iperf", "protocol": "TCP", "port": PORT,
                    "targetPort": "iperf"}]}}),
    ];
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(NS, name)
}

/// iperf3 servers in the pods, stopped by PID on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            switchyard_testbed::stop_pid(child.id() as i32);
            let _ = child.wait();
        }
    }
}

/// The controller, stopped (SIGSTOP) while it is held; resumed (SIGCONT) on drop.
struct Paused(i32);

impl Paused {
    fn new(pid: u32) -> Paused {
        let pid = pid as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP the controller");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Normal,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    SameNode,
    CrossNode,
    Service,
}

const PATHS: [Path; 3] = [Path::SameNode, Path::CrossNode, Path::Service];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::SameNode => "same_node",
            Path::CrossNode => "cross_node",
            Path::Service => "service",
        }
    }
}

struct Bench {
    cluster: DemoCluster,
    cidr: String,
    /// br-int's flows as the controller made them, per node, without counters.
    ours_flows: Vec<(String, BTreeSet<String>)>,
}

impl Bench {
    fn node(&self, node: &str) -> &switchyard_testbed::OvsSandbox {
        &self.cluster.nodes[node].ovs
    }

    fn pod_exec(&self, pod: &str, argv: &[&str]) -> std::process::Output {
        self.cluster.pods[&key(pod)]
            .netns
            .exec_output(argv)
            .expect("run in the pod")
    }

    fn flows(&self, node: &str) -> BTreeSet<String> {
        self.node(node)
            .ofctl("dump-flows", "br-int", &["--no-stats"])
            .expect("dump-flows")
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    fn destination(&self, path: Path, side: Side) -> Ipv4Addr {
        match (path, side) {
            (Path::SameNode, _) | (Path::Service, Side::Normal) => {
                self.cluster.pods[&key("local")].ip
            }
            (Path::CrossNode, _) => self.cluster.pods[&key("remote")].ip,
            (Path::Service, Side::Ours) => VIP,
        }
    }

    /// Switches both nodes to the NORMAL table (the controller must be paused).
    fn to_normal(&self) {
        let ip = |n: &str| self.cluster.nodes[n].model.internal_ip;
        for (node, peer) in [(NODE_1, ip(NODE_2)), (NODE_2, ip(NODE_1))] {
            let file = self.cluster.workdir().join(format!("normal-{node}.flows"));
            std::fs::write(
                &file,
                format!("table=0,priority=0,actions=set_field:{peer}->tun_dst,NORMAL\n"),
            )
            .expect("write the baseline flow");
            self.node(node)
                .ofctl(
                    "replace-flows",
                    "br-int",
                    &[file.to_str().expect("utf-8 path")],
                )
                .expect("replace-flows with the NORMAL baseline");
        }
        for pod in ["client", "local", "remote"] {
            let out = self.pod_exec(pod, &["ip", "route", "replace", &self.cidr, "dev", "eth0"]);
            assert!(out.status.success(), "on-link route in {pod}: {out:?}");
        }
    }

    /// Back to ours: the on-link routes go; the controller (resumed by the caller) puts
    /// its flows back; waits until they are exactly the saved ones.
    fn to_ours(&self) {
        for pod in ["client", "local", "remote"] {
            let _ = self.pod_exec(pod, &["ip", "route", "del", &self.cidr, "dev", "eth0"]);
        }
        let started = Instant::now();
        for (node, saved) in &self.ours_flows {
            loop {
                let now = self.flows(node);
                if &now == saved {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "{node}: the controller did not restore its flows within 120 s ({} of {} flows differ)",
                    now.symmetric_difference(saved).count(),
                    saved.len()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        eprintln!(
            "[dataplane] the controller restored its flows in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// CPU seconds both nodes' ovs-vswitchd have used so far (utime + stime).
    fn vswitchd_cpu_s(&self) -> f64 {
        [NODE_1, NODE_2]
            .iter()
            .map(|n| {
                let pidfile = self.node(n).dir().join("ovs-vswitchd.pid");
                let pid = std::fs::read_to_string(pidfile).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                    .unwrap_or_default();
                // Fields after the command name (which may hold spaces): state is field 3,
                // utime and stime are fields 14 and 15.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<f64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0.0))
                    .collect();
                (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / clock_ticks()
            })
            .sum()
    }

    /// One iperf3 run from the client: Gbit/s received; both vswitchds' CPU milliseconds
    /// per Gbit carried (over the whole run, warm-up included); the client node's datapath
    /// counters for the run.
    fn iperf(&self, dst: Ipv4Addr, secs: usize) -> (f64, f64, String) {
        let ovs = self.node(NODE_1);
        let _ = ovs.appctl(&["dpif-netdev/pmd-stats-clear"]);
        let cpu0 = self.vswitchd_cpu_s();
        let out = self.pod_exec(
            "client",
            &[
                "iperf3",
                "-c",
                &dst.to_string(),
                "-p",
                &PORT.to_string(),
                "-t",
                &secs.to_string(),
                "-O",
                "1",
                "-J",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let bps = report["end"]["sum_received"]["bits_per_second"].as_f64();
        let Some(bps) = bps.filter(|_| out.status.success()) else {
            panic!(
                "iperf3 to {dst} failed ({}): {} {}",
                out.status,
                report["error"].as_str().unwrap_or(&text),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let cpu = self.vswitchd_cpu_s() - cpu0;
        let gbit = bps / 1e9 * (secs + 1) as f64;
        (bps / 1e9, 1000.0 * cpu / gbit, datapath_summary(ovs))
    }
}

/// The client node's datapath during the last run: passes per packet, recirculations,
/// megaflow hits and upcalls (main thread of the userspace datapath), then megaflows and
/// distinct recirculation ids in `dpctl/dump-flows`.
fn datapath_summary(ovs: &switchyard_testbed::OvsSandbox) -> String {
    let stats = ovs
        .appctl(&["dpif-netdev/pmd-stats-show"])
        .unwrap_or_default();
    let field = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    let flows = ovs.appctl(&["dpctl/dump-flows"]).unwrap_or_default();
    let recirc: BTreeSet<&str> = flows
        .lines()
        .filter_map(|l| l.split("recirc_id(").nth(1))
        .filter_map(|s| s.split(')').next())
        .collect();
    format!(
        "packets={} recirculations={} passes_per_packet={} megaflow_hits={} upcalls={} megaflows={} recirc_ids={}",
        field("packets received"),
        field("packet recirculations"),
        field("avg. datapath passes per packet"),
        field("megaflow hits"),
        field("miss with success upcall"),
        flows.lines().filter(|l| !l.trim().is_empty()).count(),
        recirc.len()
    )
}

/// The kernel's clock ticks per second (`/proc/PID/stat` counts CPU time in them).
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        switchyard_tests::run("getconf", &["CLK_TCK"])
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

fn tools_missing() -> Vec<&'static str> {
    ["iperf3", "ovs-vswitchd", "ovs-ofctl", "ovs-appctl", "ip"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    if !switchyard_tests::is_root() {
        eprintln!("dataplane: skipped: needs root (network namespaces, its own OVS daemons)");
        return;
    }
    let missing = tools_missing();
    if !missing.is_empty() {
        eprintln!(
            "dataplane: skipped: {} not installed; scripts/install-deps.sh installs them",
            missing.join(" ")
        );
        return;
    }
    let secs = env_usize("SECS", 5).max(1);
    let rounds = env_usize("ROUNDS", 4).max(1);
    println!(
        "dataplane: secs={secs} rounds={rounds}; host load {}",
        host_load()
    );

    let cluster = DemoCluster::start(DemoOptions {
        cluster_yaml: cluster_yaml(),
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"));
    let mut bench = Bench {
        cidr: cluster
            .cluster_cidr()
            .expect("the demo's cluster CIDR")
            .to_string(),
        cluster,
        ours_flows: vec![],
    };
    bench.cluster.stop_pod_servers();
    // A real node's datapath has megaflows; the test bed turns them off (testbed's
    // `OvsSandbox::start_vswitchd` says why), and nothing here changes flows under traffic.
    for node in bench.cluster.nodes.values() {
        node.ovs.set_megaflows(true).expect("enable megaflows");
    }
    let servers = Servers(
        ["local", "remote"]
            .iter()
            .map(|pod| {
                Command::new("ip")
                    .args(["netns", "exec", bench.cluster.pods[&key(pod)].netns.name()])
                    .args(["iperf3", "-s", "-p", &PORT.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start iperf3 -s")
            })
            .collect(),
    );
    // The Service is programmed (its ServiceLb flow), then every path answers once.
    let vip = VIP.to_string();
    assert!(
        switchyard_testbed::wait_until(Duration::from_secs(60), || bench
            .cluster
            .dump_flows(NODE_1, &["table=ServiceLb"])
            .is_ok_and(|f| f.contains(&vip))),
        "the Service's flow never appeared on {NODE_1}"
    );
    std::thread::sleep(Duration::from_millis(500));
    for path in PATHS {
        let (g, _, _) = bench.iperf(bench.destination(path, Side::Ours), 1);
        eprintln!("[dataplane] warm-up {}: {g:.2} Gbit/s", path.name());
    }
    bench.ours_flows = [NODE_1, NODE_2]
        .iter()
        .map(|n| (n.to_string(), bench.flows(n)))
        .collect();
    let controller = bench.cluster.controller_pid().expect("controller running");
    println!(
        "dataplane: client {} (node-1), local {} (node-1), remote {} (node-2), Service {VIP}:{PORT} → local; flows ours: node-1 {}, node-2 {}",
        bench.cluster.pods[&key("client")].ip,
        bench.cluster.pods[&key("local")].ip,
        bench.cluster.pods[&key("remote")].ip,
        bench.ours_flows[0].1.len(),
        bench.ours_flows[1].1.len()
    );

    let mut samples: Vec<[Vec<f64>; 2]> = PATHS.iter().map(|_| [vec![], vec![]]).collect();
    let mut cpu_per_gbit = samples.clone();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::Ours, Side::Normal]
        } else {
            [Side::Normal, Side::Ours]
        };
        for side in order {
            let paused = (side == Side::Normal).then(|| {
                let p = Paused::new(controller);
                bench.to_normal();
                p
            });
            // The paths' order rotates too, so none always runs first after a switch.
            for k in 0..PATHS.len() {
                let i = (k + round) % PATHS.len();
                let path = PATHS[i];
                let (g, cpu, dp) = bench.iperf(bench.destination(path, side), secs);
                samples[i][usize::from(side == Side::Normal)].push(g);
                cpu_per_gbit[i][usize::from(side == Side::Normal)].push(cpu);
                println!(
                    "round {round} {:<6} {:<10} {g:7.3} Gbit/s  vswitchd {cpu:6.0} ms CPU/Gbit  node-1 datapath: {dp}",
                    format!("{side:?}").to_lowercase(),
                    path.name()
                );
            }
            if let Some(p) = paused {
                drop(p);
                bench.to_ours();
            }
        }
    }

    let ratio = |i: usize| mean(&samples[i][0]) / mean(&samples[i][1]);
    for (i, path) in PATHS.iter().enumerate() {
        println!(
            "{}: ours mean={:.3} Gbit/s {:?}; normal mean={:.3} Gbit/s {:?}; ratio={:.3}",
            path.name(),
            mean(&samples[i][0]),
            samples[i][0]
                .iter()
                .map(|g| format!("{g:.3}"))
                .collect::<Vec<_>>(),
            mean(&samples[i][1]),
            samples[i][1]
                .iter()
                .map(|g| format!("{g:.3}"))
                .collect::<Vec<_>>(),
            ratio(i)
        );
        println!(
            "{}: vswitchd CPU per Gbit (both nodes): ours {:.0} ms, normal {:.0} ms ({:.2}×)",
            path.name(),
            mean(&cpu_per_gbit[i][0]),
            mean(&cpu_per_gbit[i][1]),
            mean(&cpu_per_gbit[i][0]) / mean(&cpu_per_gbit[i][1])
        );
    }
    println!("dataplane: host load {}", host_load());
    drop(servers);
    drop(bench);
    println!(
        "p4: same_node_ratio={:.3} cross_node_ratio={:.3} service_ratio={:.3}",
        ratio(0),
        ratio(1),
        ratio(2)
    );
}
