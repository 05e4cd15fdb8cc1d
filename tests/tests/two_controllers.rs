//! Two controllers, one switch (issue: two controllers, one leader). On a real
//! ovsdb-server and ovs-vswitchd with two pods pinging each other: controller A leads
//! and programs the node; controller B then takes the lead with a newer generation while
//! A still believes it leads (a partitioned leader whose clock or network lags). B steals
//! the node's OVSDB lock and becomes br-int's OpenFlow master; A is fenced off at once
//! and writes nothing more; B finds the switch as A left it and rewrites none of it; not
//! one ping is lost; a change after the takeover is B's to make, and A does not undo it.
//!
//! Both controllers run in this process (the core exactly as `switchyard controller` runs
//! it, each with its own OpenFlow listener); the test holds their leadership, which is
//! what lets A stay "leader" after B took over.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use switchyard::agent::{AgentConfig, AgentStatus, StatePort, SwitchDb};
use switchyard::controller::Core;
use switchyard::ipam::mac_for;
use switchyard::leader::Leadership;
use switchyard::pipeline::Encap;
use switchyard::source::k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus,
};
use switchyard::source::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard::source::{Delta, Object, ObjectKey};
use switchyard::switch_config::PodPort;
use switchyard_tests::{Netns, OvsSandbox};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const NODE: &str = "tc-node";
const LIMIT: Duration = Duration::from_secs(60);

fn node() -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(NODE.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some("10.241.1.0/24".into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "192.168.241.1".into(),
            }]),
            ..Default::default()
        }),
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("app".to_owned(), name.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 241, 1, 10 + i)
}

fn port(name: &str, i: u8) -> PodPort {
    PodPort {
        iface: format!("tcv{i}"),
        pod: ObjectKey::new("default", name),
        ip: ip(i),
        mac: mac_for(ip(i)),
        container_id: format!("c-{name}"),
    }
}

/// A NetworkPolicy that isolates pod b for ingress: nothing may reach it.
fn deny_to_b() -> Object {
    let policy: switchyard::source::k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-to-b", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]}
        }))
        .expect("a NetworkPolicy");
    Object::from(policy)
}

/// A pod: a namespace with `eth0` (the pod's address and MAC, routes via the gateway),
/// whose peer `iface` is in the node's namespace for the controller to attach.
fn make_pod(ovs: &OvsSandbox, p: &PodPort) -> Netns {
    let netns = Netns::new("tc");
    ovs.netns.exec(&[
        "ip",
        "link",
        "add",
        &p.iface,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns.name(),
    ]);
    ovs.netns.exec(&["ip", "link", "set", &p.iface, "up"]);
    let mac = p.mac.to_string();
    let addr = format!("{}/24", p.ip);
    netns.exec(&["ip", "link", "set", "lo", "up"]);
    netns.exec(&["ip", "link", "set", "eth0", "address", &mac]);
    netns.exec(&["ip", "addr", "add", &addr, "dev", "eth0"]);
    netns.exec(&["ip", "link", "set", "eth0", "up"]);
    netns.exec(&["ip", "route", "add", "default", "via", "10.241.1.1"]);
    switchyard_testbed::tx_offload_off(netns.testbed(), "eth0").expect("tx offload off");
    netns
}

struct Controller {
    core: Arc<Core>,
    leadership: watch::Sender<Leadership>,
    deltas: mpsc::UnboundedSender<Vec<Delta>>,
    accept: JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Controller {
    async fn start(
        socket: &std::path::Path,
        ovs: &OvsSandbox,
        targets: &str,
        leadership: Leadership,
        objects: Vec<Object>,
    ) -> Controller {
        let mut listener = openflow::Listener::bind(&format!("punix:{}", socket.display()))
            .await
            .expect("listen for br-int");
        let (deltas, delta_rx) = mpsc::unbounded_channel();
        let (leadership, leadership_rx) = watch::channel(leadership);
        let core = Arc::new(Core::start_elected(
            AgentConfig::new(
                SwitchDb::Ovsdb(ovs.db_target()),
                targets.to_owned(),
                Encap::Geneve,
                "netdev".into(),
            ),
            delta_rx,
            leadership_rx,
        ));
        deltas
            .send(objects.into_iter().map(Delta::Apply).collect())
            .expect("state task");
        let accept = {
            let core = core.clone();
            tokio::spawn(async move {
                while let Ok(conn) = listener.accept().await {
                    core.accept_switch(conn);
                }
            })
        };
        Controller {
            core,
            leadership,
            deltas,
            accept,
        }
    }

    fn send(&self, objects: Vec<Object>) {
        self.deltas
            .send(objects.into_iter().map(Delta::Apply).collect())
            .expect("state task");
    }

    fn status(&self) -> Option<AgentStatus> {
        let agents = self.core.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.get(NODE).map(|a| a.status.borrow().clone())
    }

    fn bundles(&self) -> u64 {
        let agents = self.core.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.get(NODE).map_or(0, |a| a.realised.borrow().bundles)
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pings(from: &Netns, to: Ipv4Addr) -> bool {
    from.exec_output(&["ping", "-c", "1", "-W", "1", &to.to_string()])
        .status
        .success()
}

fn flows(ovs: &OvsSandbox) -> Vec<String> {
    let mut lines: Vec<String> = ovs
        .ofctl("dump-flows", "br-int", &["--no-stats"])
        .lines()
        .filter(|l| l.contains("cookie="))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_fences_the_old_one_off_and_no_ping_is_lost() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start_tagged("tc");
    // vswitchd connects only to unix sockets in its own run directory.
    let (sock_a, sock_b) = (ovs.dir().join("a.sock"), ovs.dir().join("b.sock"));
    // Both replicas in br-int's Controller table, as each lists both.
    let targets = format!("unix:{},unix:{}", sock_a.display(), sock_b.display());
    let (port_a, port_b) = (port("a", 0), port("b", 1));
    let pod_a = make_pod(&ovs, &port_a);
    let _pod_b = make_pod(&ovs, &port_b);
    let objects = || {
        vec![
            Object::from(node()),
            Object::from(pod("a")),
            Object::from(pod("b")),
        ]
    };

    // A leads (generation 100) and attaches both pods.
    let a = Controller::start(&sock_a, &ovs, &targets, leads(100), objects()).await;
    let mut snapshots = a.core.state.subscribe();
    while snapshots.borrow_and_update().pod_count() < 2 {
        snapshots.changed().await.expect("state task");
    }
    a.core
        .state
        .restore_attachments(NODE, vec![port_a.clone(), port_b.clone()])
        .await
        .expect("attach");
    let started = tokio::time::Instant::now();
    while !a.status().is_some_and(|s| s.ready) {
        assert!(
            started.elapsed() < LIMIT,
            "A never realised the node:\n{}\n{:#?}\n{}",
            ovs.vsctl(&["show"]),
            a.status(),
            ovs.log_tail("ovs-vswitchd")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = tokio::time::Instant::now();
    while !pings(&pod_a, port_b.ip) {
        assert!(
            started.elapsed() < LIMIT,
            "a never reached b:\n{}\n{}\n{:#?}",
            ovs.vsctl(&["show"]),
            flows(&ovs).join("\n"),
            a.status()
        );
    }
    let controllers = ovs.vsctl(&["get-controller", "br-int"]);
    assert!(
        controllers.contains("a.sock") && controllers.contains("b.sock"),
        "both replicas are in the Controller table: {controllers}"
    );
    let before = flows(&ovs);
    assert!(!before.is_empty());

    // 200 pings, one every 50 ms (10 s), from here to after the takeover. A fixed count,
    // so ping waits for its last reply instead of counting one cut off in flight.
    let mut ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            pod_a.name(),
            "ping",
            "-i",
            "0.05",
            "-c",
            "200",
            "-W",
            "1",
        ])
        .arg(port_b.ip.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ping");

    // B starts as the standby: br-int connects to it too, and B keeps the connection
    // without sending anything on it.
    let standby = Leadership {
        leader: false,
        generation: None,
    };
    let b = Controller::start(&sock_b, &ovs, &targets, standby, objects()).await;
    eventually("B, standby, keeps br-int's connection", || {
        b.core.parked_switches() == 1
    })
    .await;
    let b_connections = || {
        std::fs::read_to_string(ovs.dir().join("ovs-vswitchd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("b.sock: connected"))
            .count()
    };
    let connected_before = b_connections();
    assert!(
        connected_before >= 1,
        "vswitchd's log shows no connection to B:\n{}",
        ovs.log_tail("ovs-vswitchd")
    );
    assert!(b.status().is_none(), "a standby runs no agent");
    assert!(
        a.status().is_some_and(|s| s.ready && !s.fenced),
        "A unaffected by B's standby"
    );

    // B takes the lead with a newer generation; nobody tells A.
    b.leadership.send_replace(leads(101));
    eventually("A is fenced off (its OVSDB lock was stolen)", || {
        a.status().is_some_and(|s| s.fenced && !s.ready)
    })
    .await;
    eventually("B realises the node as br-int's master", || {
        b.status().is_some_and(|s| s.ready && !s.fenced)
    })
    .await;
    assert!(
        a.core.agents.lock().unwrap().contains_key(NODE),
        "A still believes it leads (its agent exists, fenced)"
    );
    // B read the switch back and found it as A left it: no bundle, nothing written twice.
    assert_eq!(b.bundles(), 0, "B rewrote flows A had already installed");
    assert_eq!(flows(&ovs), before, "the takeover changed br-int's flows");
    assert_eq!(
        b_connections(),
        connected_before,
        "B took over on the connection it kept as standby, without br-int reconnecting"
    );
    assert!(
        ping.try_wait().expect("ping").is_none(),
        "the takeover took longer than the pings: they prove nothing"
    );
    let out = ping.wait_with_output().expect("ping ends");
    let stats = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = ping_counts(&stats);
    eprintln!("pings during the takeover: {sent} sent, {received} received");
    assert_eq!(sent, 200, "{stats}");
    assert_eq!(sent, received, "pings lost during the takeover:\n{stats}");

    // A change after the takeover: B makes it, A (still "leader" to itself) writes nothing.
    a.send(vec![deny_to_b()]);
    b.send(vec![deny_to_b()]);
    eventually("B's policy isolates b", || !pings(&pod_a, port_b.ip)).await;
    let after = flows(&ovs);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(flows(&ovs), after, "someone changed B's flows");
    assert!(!pings(&pod_a, port_b.ip), "A undid B's policy");
    let status = a.status().expect("A's agent");
    let error = status.last_error.map(|(_, e)| e).unwrap_or_default();
    assert!(
        error.contains("another controller has taken over"),
        "A says why it stopped: {error}"
    );
    // A's election never said otherwise: it was fenced by the switch, not by its Lease.
    assert!(a.leadership.borrow().leader);
}

fn leads(generation: u64) -> Leadership {
    Leadership {
        leader: true,
        generation: Some(generation),
    }
}

/// `N packets transmitted, M received` from ping's summary.
fn ping_counts(stats: &str) -> (u64, u64) {
    let line = stats
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping's output:\n{stats}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}
