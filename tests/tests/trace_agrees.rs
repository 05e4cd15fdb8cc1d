//! The packet trace agrees with the switch: on a real cluster (the demo's harness: real
//! ovs-vswitchd per node, the real controller and CNI plugin, a NetworkPolicy), for a set of
//! packets the table path and verdict of `switchyard::trace::trace` — run on the node's
//! flows as `ovs-ofctl dump-flows` shows them and the node's ports as OVSDB has them — equal
//! those of `ovs-appctl ofproto/trace br-int` on that node.
//!
//! ofproto/trace's output (ofproto/ofproto-dpif-trace.c, ofproto-dpif-xlate.c): each table
//! visited is a line `%2d. MATCH, priority P, cookie C` (or `No match.`) under the
//! `bridge("NAME")` heading it belongs to (a native tunnel's encapsulated packet shows up
//! under `bridge("br-phy")`, which is not br-int's path); each
//! pass (the first, and one per conntrack recirculation, resumed as `trk|new` by default)
//! ends with `Datapath actions: ...`, whose bare numbers are datapath ports (mapped back to
//! OpenFlow ports with `dpif/show`), whose `tnl_push(...)` carries the tunnel's `dst=` and
//! whose `userspace(...controller(...))` is a packet-in (a refused Service connection).
//!
//! Services: ofproto/trace applies a `ct(nat(dst=...))` to the recirculated packet
//! ("Replacing src/dst IP/ports to simulate NAT") and carries the committed `ct_mark`; a
//! select group (dp_hash method) is followed only when the packet carries `dp_hash`, so the
//! trace's resolved packet carries the one that selects the bucket it followed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::agent::InstalledPod;
use switchyard::pipeline::{self, Encap};
use switchyard::source::{ClusterState, ObjectKey, diff_states, parse_cluster_file};
use switchyard::state::NetworkState;
use switchyard::switch_config::{EXT_CONTAINER, EXT_IP, EXT_MAC, EXT_POD, PodPort};
use switchyard::trace::{TraceInput, TraceReport, Verdict, trace};
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_tests::{require_root, workspace_binary};

fn cluster_yaml() -> String {
    let mut docs: Vec<Value> = vec![];
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        let cidr = format!("10.244.{}.0/24", i + 1);
        docs.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        );
    }
    for ns in ["x", "y"] {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ns": ns}}}));
    }
    for (ns, name, node) in [
        ("x", "a", "n1"),
        ("x", "b", "n1"),
        ("y", "a", "n1"),
        ("x", "c", "n2"),
        ("y", "b", "n2"),
    ] {
        let mut labels = json!({"pod": name});
        if ns == "x" {
            labels["udp"] = json!("yes");
        }
        if ns == "x" && (name == "b" || name == "c") {
            labels["web"] = json!("yes");
        }
        docs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 80}]}]}}));
    }
    // Every pod of y admits x/a on TCP 80 and nothing else (a two-clause conjunction).
    docs.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-x-a", "namespace": "y"},
        "spec": {"podSelector": {}, "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}},
                      "podSelector": {"matchLabels": {"pod": "a"}}}],
            "ports": [{"protocol": "TCP", "port": 80}]}]}}),
    );
    // x/b may open connections to y's pods only (egress, a conjunction on the sender's node).
    docs.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "b-to-y", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}}),
    );
    // ClusterIP Services (the demo builds their EndpointSlices from the selectors).
    for svc in SERVICES {
        let mut spec = json!({"clusterIP": svc.ip, "clusterIPs": [svc.ip],
            "selector": svc.selector.iter().map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<String, Value>>(),
            "ports": [{"name": "http", "port": svc.port, "targetPort": svc.target,
                "protocol": svc.protocol}]});
        if svc.sticky {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        docs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.ns}, "spec": spec}));
    }
    // 300 endpoints (addresses no pod holds, on both nodes' CIDRs): one group over 256
    // buckets, whose bucket OVS picks by its default select method.
    docs.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "big", "namespace": "x"},
        "spec": {"clusterIP": BIG_IP, "clusterIPs": [BIG_IP],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    let endpoints: Vec<Value> = (1..=2)
        .flat_map(|n| (100..250).map(move |h| json!({"addresses": [format!("10.244.{n}.{h}")]})))
        .collect();
    docs.push(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "big-1", "namespace": "x",
            "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints}),
    );
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The cluster IP of `x/big`, a Service of 300 endpoints.
const BIG_IP: &str = "10.96.0.18";

/// A Service of the test cluster.
struct TestService {
    ns: &'static str,
    name: &'static str,
    ip: &'static str,
    selector: &'static [(&'static str, &'static str)],
    port: u16,
    target: u16,
    sticky: bool,
    protocol: &'static str,
}

const SERVICES: [TestService; 8] = [
    // One endpoint on n1, one on n2, none.
    svc("x", "web-b", "10.96.0.10", &[("pod", "b")], 80, 8080),
    svc("x", "web-c", "10.96.0.11", &[("pod", "c")], 80, 8080),
    svc("x", "empty", "10.96.0.12", &[("pod", "nobody")], 80, 8080),
    // y/a admits x/a on TCP 80 only: DNATed to 8080 it is denied, to 80 allowed.
    svc("y", "web-a", "10.96.0.13", &[("pod", "a")], 80, 8080),
    svc("y", "web-a80", "10.96.0.14", &[("pod", "a")], 8080, 80),
    // Two endpoints (x/b on n1, x/c on n2).
    svc("x", "web", "10.96.0.15", &[("web", "yes")], 80, 8080),
    TestService {
        sticky: true,
        ..svc("x", "sticky", "10.96.0.16", &[("pod", "b")], 80, 8080)
    },
    // UDP, three endpoints (x/a, x/b on n1, x/c on n2): a group each, multipath picks.
    TestService {
        protocol: "UDP",
        ..svc("x", "dns", "10.96.0.17", &[("udp", "yes")], 53, 5353)
    },
];

const fn svc(
    ns: &'static str,
    name: &'static str,
    ip: &'static str,
    selector: &'static [(&'static str, &'static str)],
    port: u16,
    target: u16,
) -> TestService {
    TestService {
        ns,
        name,
        ip,
        selector,
        port,
        target,
        sticky: false,
        protocol: "TCP",
    }
}

/// What ofproto/trace says.
#[derive(Debug, PartialEq, Eq)]
struct SwitchTrace {
    /// br-int's tables, in the order visited.
    path: Vec<u8>,
    /// OpenFlow ports the packet leaves by (tunnel output excluded).
    outputs: Vec<u32>,
    /// Tunnel destinations of `tnl_push` / `set(tunnel(...))`.
    tunnels: Vec<Ipv4Addr>,
}

/// Splits a datapath action list at its top-level commas.
fn top_level(actions: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, vec![]);
    for (i, c) in actions.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(actions[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(actions[start..].trim());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The outer destination of a tunnel push: `dst=` of its IPv4 header (`tnl_push`, native
/// tunnelling) or of `set(tunnel(...))` (kernel tunnels).
fn tunnel_dst(action: &str) -> Option<Ipv4Addr> {
    let start = action.find("ipv4(").or_else(|| action.find("tunnel("))?;
    let rest = &action[start..];
    let at = rest.find("dst=")?;
    let rest = &rest[at + 4..];
    let end = rest.find([',', ')']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn parse_ofproto_trace(text: &str, odp_to_ofport: &BTreeMap<u32, u32>) -> SwitchTrace {
    let mut t = SwitchTrace {
        path: vec![],
        outputs: vec![],
        tunnels: vec![],
    };
    // The bridge heading the current line is under. ofproto/trace nests a native tunnel's
    // underlay bridge below br-int's output action but prints it at the same indentation,
    // so a table line belongs to the latest heading: exact for this pipeline, whose output
    // to the tunnel is a flow's last action (nothing of br-int follows the underlay part).
    let mut bridge = String::new();
    for line in text.lines() {
        let body = line.trim_start();
        if let Some(name) = body
            .strip_prefix("bridge(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            bridge = name.to_owned();
            continue;
        }
        if let Some(actions) = body.strip_prefix("Datapath actions:") {
            let mut pushed = false;
            for a in top_level(actions.trim()) {
                if a.contains("tnl_push(") || a.contains("set(tunnel(") {
                    // Native tunnelling: the outputs after the push are the underlay
                    // bridge's (br-phy), not ports of br-int.
                    t.tunnels.extend(tunnel_dst(a));
                    pushed = true;
                } else if pushed {
                    continue;
                } else if a.starts_with("userspace(") && a.contains("controller(") {
                    // A packet-in: output to CONTROLLER.
                    t.outputs.push(openflow::port::CONTROLLER);
                } else if let Ok(odp) = a.parse::<u32>() {
                    let of = odp_to_ofport
                        .get(&odp)
                        .unwrap_or_else(|| panic!("datapath port {odp} is not br-int's: {text}"));
                    // A kernel-style tunnel shows as set(tunnel(...)) then the tunnel's
                    // port: the destination is already taken from set(tunnel).
                    if *of != pipeline::TUNNEL_OFPORT {
                        t.outputs.push(*of);
                    }
                }
            }
            continue;
        }
        let Some((num, rest)) = body.split_once(". ") else {
            continue;
        };
        let Ok(table) = num.parse::<u8>() else {
            continue;
        };
        if !rest.is_empty() && bridge == pipeline::BRIDGE {
            t.path.push(table);
        }
    }
    t
}

/// A cluster node as the test reads it: its flows, groups and pods, and its datapath ports.
struct NodeView {
    pods: BTreeMap<ObjectKey, InstalledPod>,
    ports: Vec<PodPort>,
    flows: Vec<openflow::FlowStats>,
    groups: Vec<openflow::GroupDesc>,
    odp_to_ofport: BTreeMap<u32, u32>,
}

fn read_node(cluster: &DemoCluster, node: &str) -> NodeView {
    let ovs = &cluster.nodes[node].ovs;
    let rows: Value = serde_json::from_str(
        &ovs.vsctl(&[
            "--format=json",
            "--columns=name,ofport,external_ids",
            "list",
            "Interface",
        ])
        .expect("list Interface"),
    )
    .expect("ovs-vsctl json");
    let (mut pods, mut ports) = (BTreeMap::new(), vec![]);
    for row in rows["data"].as_array().expect("rows") {
        let name = row[0].as_str().expect("name").to_owned();
        let ofport = row[1].as_i64().unwrap_or(-1);
        let ids: BTreeMap<String, String> = row[2][1]
            .as_array()
            .expect("external_ids map")
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap_or_default().to_owned(),
                    kv[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let Some((ns, pod)) = ids.get(EXT_POD).and_then(|p| p.split_once('/')) else {
            continue;
        };
        let key = ObjectKey::new(ns, pod);
        let container_id = ids[EXT_CONTAINER].clone();
        ports.push(PodPort {
            iface: name.clone(),
            pod: key.clone(),
            ip: ids[EXT_IP].parse().expect("pod ip"),
            mac: ids[EXT_MAC].parse().expect("pod mac"),
            container_id: container_id.clone(),
        });
        assert!(ofport > 0, "{name} has no ofport");
        pods.insert(
            key,
            InstalledPod {
                container_id,
                iface: name,
                ofport: ofport as u32,
                since: std::time::SystemTime::UNIX_EPOCH,
            },
        );
    }
    let flows = ovs
        .ofctl("dump-flows", pipeline::BRIDGE, &[])
        .expect("dump-flows")
        .lines()
        .filter(|l| !l.contains("reply ("))
        .map(|l| {
            let fm = openflow::text::parse_flow(l.trim())
                .unwrap_or_else(|e| panic!("dump-flows line {l:?}: {e}"));
            openflow::FlowStats::from(&fm)
        })
        .collect();
    let groups = ovs
        .ofctl("dump-groups", pipeline::BRIDGE, &[])
        .expect("dump-groups")
        .lines()
        .filter(|l| !l.contains("reply ("))
        .map(|l| {
            let g = openflow::text::parse_group(l.trim())
                .unwrap_or_else(|e| panic!("dump-groups line {l:?}: {e}"));
            openflow::GroupDesc {
                group_type: g.group_type,
                group_id: g.group_id,
                buckets: g.buckets,
            }
        })
        .collect();
    // dpif/show: `br-int:` then `  NAME OFPORT/ODPPORT: (...)` per port.
    let mut odp_to_ofport = BTreeMap::new();
    let mut in_br_int = false;
    for line in ovs.appctl(&["dpif/show"]).expect("dpif/show").lines() {
        let body = line.trim();
        if body.ends_with(':') && !body.contains(' ') {
            in_br_int = body == format!("{}:", pipeline::BRIDGE);
            continue;
        }
        if !in_br_int {
            continue;
        }
        let Some(nums) = body.split_whitespace().nth(1) else {
            continue;
        };
        let nums = nums.trim_end_matches(':');
        if let Some((of, odp)) = nums.split_once('/')
            && let (Ok(of), Ok(odp)) = (of.parse::<u32>(), odp.parse::<u32>())
        {
            odp_to_ofport.insert(odp, of);
        }
    }
    NodeView {
        pods,
        ports,
        flows,
        groups,
        odp_to_ofport,
    }
}

/// What the case must end as (so that agreement alone cannot pass a broken pipeline).
#[derive(Debug)]
enum Expect {
    /// Whatever the switch does: agreement and the case's own checks (the bucket) judge it.
    Any,
    /// One of a Service's endpoints (which one is the hash's: the switch must agree).
    AnyOf(&'static [Expect]),
    Pod(&'static str, &'static str),
    Gateway,
    InPort,
    Tunnel(&'static str),
    Drop(&'static str),
    Refused(&'static str),
}

#[test]
fn trace_agrees_with_ofproto_trace_on_path_and_verdict() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let cluster = DemoCluster::start(DemoOptions {
        cluster_yaml: cluster_yaml(),
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"));
    // Policy flows are realised asynchronously: wait for the rule's conj_id flow on both
    // nodes (a convergence wait).
    for node in ["n1", "n2"] {
        let converged = switchyard_testbed::wait_until(Duration::from_secs(60), || {
            cluster
                .dump_flows(node, &["table=IngressRule"])
                .is_ok_and(|t| t.contains("conj_id="))
        });
        assert!(
            converged,
            "no policy flows on {node}:\n{}",
            cluster.controller_log_tail(30)
        );
    }
    // Service flows too: every cluster IP in ServiceLb on both nodes.
    for node in ["n1", "n2"] {
        let converged = switchyard_testbed::wait_until(Duration::from_secs(60), || {
            cluster
                .dump_flows(node, &["table=ServiceLb"])
                .is_ok_and(|t| {
                    SERVICES
                        .iter()
                        .map(|s| s.ip)
                        .chain([BIG_IP])
                        .all(|ip| t.contains(&format!("nw_dst={ip},")))
                })
        });
        assert!(
            converged,
            "Service flows missing on {node}:\n{}\n{}",
            cluster
                .dump_flows(node, &["table=ServiceLb"])
                .unwrap_or_default(),
            cluster.controller_log_tail(30)
        );
    }
    // Native tunnelling needs the remote node's underlay MAC in the switch's neighbour
    // cache: one ping across (x has no policy) fills it on both nodes.
    let pod = |ns: &str, n: &str| &cluster.pods[&ObjectKey::new(ns, n)];
    switchyard_demo::probe::ping_attempts(pod("x", "a").netns.name(), pod("x", "c").ip, 10)
        .unwrap_or_else(|e| panic!("x/a → x/c: {e}"));

    // The controller's view, rebuilt from the same cluster file and the nodes' OVSDB (as a
    // restarted controller does).
    let text = std::fs::read_to_string(cluster.cluster_file()).expect("cluster file");
    let (objects, problems) = parse_cluster_file(&text);
    assert!(problems.is_empty(), "{problems:?}");
    let mut state = NetworkState::new();
    state.apply(diff_states(&ClusterState::default(), &objects));
    let views: BTreeMap<&str, NodeView> = ["n1", "n2"]
        .into_iter()
        .map(|n| (n, read_node(&cluster, n)))
        .collect();
    for (n, v) in &views {
        state.restore_attachments(n, v.ports.clone());
    }
    let snapshot = state.snapshot();

    let xa = pod("x", "a");
    let xa_iface = &views["n1"].pods[&xa.key].iface;
    let mac = |ip: Ipv4Addr| switchyard::ipam::mac_for(ip).to_string();
    let gw1 = cluster.nodes["n1"].model.gateway_ip();
    let mut cases: Vec<(&str, String, Expect)> = vec![
        (
            "n1",
            "from=x/a to=x/b port=80/TCP".into(),
            Expect::Pod("x", "b"),
        ),
        (
            "n1",
            "from=x/a to=x/b port=53/UDP".into(),
            Expect::Pod("x", "b"),
        ),
        (
            "n1",
            "from=x/a to=x/c port=80/TCP".into(),
            Expect::Tunnel("n2"),
        ),
        ("n2", "from=x/a to=x/c".into(), Expect::Pod("x", "c")),
        // Policy-allowed, on one node and across nodes (both ends).
        (
            "n1",
            "from=x/a to=y/a port=80/TCP".into(),
            Expect::Pod("y", "a"),
        ),
        (
            "n1",
            "from=x/a to=y/b port=80/TCP".into(),
            Expect::Tunnel("n2"),
        ),
        (
            "n2",
            "from=x/a to=y/b port=80/TCP".into(),
            Expect::Pod("y", "b"),
        ),
        // Policy-denied: another port, another source.
        (
            "n1",
            "from=x/a to=y/a port=81/TCP".into(),
            Expect::Drop(
                "no policy allows x/a → y/a:81/TCP; isolated for ingress by policy y/allow-x-a",
            ),
        ),
        (
            "n2",
            "from=x/b to=y/b port=80/TCP".into(),
            Expect::Drop(
                "no policy allows x/b → y/b:80/TCP; isolated for ingress by policy y/allow-x-a",
            ),
        ),
        (
            "n2",
            "from=x/c to=y/b".into(),
            Expect::Drop(
                "no policy allows x/c → y/b (ICMP); isolated for ingress by policy y/allow-x-a",
            ),
        ),
        // Egress: denied on the sender's node; allowed there, then denied by the receiver's
        // ingress.
        (
            "n1",
            "from=x/b to=x/a port=80/TCP".into(),
            Expect::Drop(
                "no policy allows x/b → x/a:80/TCP; isolated for egress by policy x/b-to-y",
            ),
        ),
        (
            "n1",
            "from=x/b to=y/a port=80/TCP".into(),
            Expect::Drop(
                "no policy allows x/b → y/a:80/TCP; isolated for ingress by policy y/allow-x-a",
            ),
        ),
        (
            "n1",
            "from=x/b to=y/b port=80/TCP".into(),
            Expect::Tunnel("n2"),
        ),
        // The node's own traffic is admitted.
        (
            "n1",
            format!(
                "in_port={},tcp,dl_dst={},nw_src={gw1},nw_dst={},tp_src=4000,tp_dst=81",
                pipeline::GATEWAY_PORT,
                mac(pod("y", "a").ip),
                pod("y", "a").ip
            ),
            Expect::Pod("y", "a"),
        ),
        // To the gateway, and out of the cluster through it.
        (
            "n1",
            format!("from=x/a to={gw1} port=10250/TCP"),
            Expect::Gateway,
        ),
        (
            "n1",
            "from=x/a to=10.99.0.5 port=80/TCP".into(),
            Expect::Gateway,
        ),
        // Spoofed source (microflow, in_port by interface name).
        (
            "n1",
            format!(
                "in_port={xa_iface},tcp,dl_src={},dl_dst={},nw_src=10.244.1.200,nw_dst={},tp_dst=80",
                mac(xa.ip),
                mac(gw1),
                pod("x", "b").ip
            ),
            Expect::Drop("spoofed source"),
        ),
        // Unknown destination in the node's subnet.
        (
            "n1",
            "from=x/a to=10.244.1.250 port=80/TCP".into(),
            Expect::Drop("unknown destination"),
        ),
        // ARP for the gateway, answered by the switch.
        (
            "n1",
            format!(
                "in_port=x/a,arp,dl_src={m},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa={},arp_sha={m},arp_tpa={gw1}",
                xa.ip,
                m = mac(xa.ip)
            ),
            Expect::InPort,
        ),
        (
            "n1",
            format!(
                "in_port=x/a,arp,dl_src={m},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa={},arp_sha={m},arp_tpa=10.244.1.251",
                xa.ip,
                m = mac(xa.ip)
            ),
            Expect::Drop("ARP for 10.244.1.251"),
        ),
        // Services: one endpoint on this node, on the other node (tunnel), none (refused).
        (
            "n1",
            "from=x/a to=service:x/web-b port=80/TCP".into(),
            Expect::Pod("x", "b"),
        ),
        (
            "n1",
            "from=x/a to=service:x/web-c port=80/TCP".into(),
            Expect::Tunnel("n2"),
        ),
        (
            "n1",
            "from=x/a to=service:x/empty port=80/TCP".into(),
            Expect::Refused("refused: Service x/empty port 80/TCP has no usable endpoint"),
        ),
        // Policy judges the endpoint's port: 8080 denied, 80 allowed.
        (
            "n1",
            "from=x/a to=service:y/web-a port=80/TCP".into(),
            Expect::Drop(
                "no policy allows x/a → y/a:8080/TCP; isolated for ingress by policy y/allow-x-a (after Service y/web-a port 80/TCP",
            ),
        ),
        (
            "n1",
            "from=x/a to=service:y/web-a80 port=8080/TCP".into(),
            Expect::Pod("y", "a"),
        ),
        // Two endpoints: the first bucket, and the other one by dp_hash; the cluster IP
        // as the destination.
        (
            "n1",
            "from=x/a to=service:x/web port=80/TCP".into(),
            Expect::Pod("x", "b"),
        ),
        (
            "n1",
            "from=x/a to=10.96.0.15 port=80/TCP dp_hash=0x1".into(),
            Expect::Tunnel("n2"),
        ),
        // Session affinity (looked up, missed, learned), and hairpin (x/b to itself).
        (
            "n1",
            "from=x/a to=service:x/sticky port=80/TCP".into(),
            Expect::Pod("x", "b"),
        ),
        (
            "n2",
            "from=x/c to=service:x/web-c port=80/TCP".into(),
            Expect::Pod("x", "c"),
        ),
        // x/b's egress (y only) judges the DNATed connection: to itself, denied.
        (
            "n1",
            "from=x/b to=service:x/web-b port=80/TCP".into(),
            Expect::Drop(
                "no policy allows x/b → x/b:8080/TCP; isolated for egress by policy x/b-to-y (after Service x/web-b",
            ),
        ),
        // The node's own processes reach a Service through the gateway.
        (
            "n1",
            format!(
                "in_port={},tcp,dl_dst={},nw_src={gw1},nw_dst=10.96.0.11,tp_src=4000,tp_dst=80",
                pipeline::GATEWAY_PORT,
                mac(gw1)
            ),
            Expect::Tunnel("n2"),
        ),
    ];
    // UDP: a group per endpoint; the source port decides the group (multipath over the
    // 5-tuple), and the switch must pick the link the trace computes.
    const DNS_ENDPOINTS: &[Expect] = &[Expect::InPort, Expect::Pod("x", "b"), Expect::Tunnel("n2")];
    for sport in (40000..40012).chain([51000, 61000]) {
        cases.push((
            "n1",
            format!("from=x/a to=service:x/dns port=53/UDP sport={sport}"),
            Expect::AnyOf(DNS_ENDPOINTS),
        ));
    }
    // 300 endpoints: the group's default select method hashes MACs, addresses and ports; the
    // switch must use the bucket the trace computes.
    for sport in [40000, 40001, 40002, 40003, 50000, 60000] {
        cases.push((
            "n1",
            format!("from=x/a to=service:x/big port=80/TCP sport={sport}"),
            Expect::Any,
        ));
    }

    let mut longest = 0;
    let mut big_buckets = std::collections::BTreeSet::new();
    let mut udp_verdicts = std::collections::BTreeSet::new();
    let mut drops = 0;
    let mut services = 0;
    let mut failures = vec![];
    for (node, packet, expect) in &cases {
        let v = &views[node];
        let report = trace(
            &TraceInput {
                node,
                snapshot: &snapshot,
                pods: &v.pods,
                flows: &v.flows,
                groups: &v.groups,
            },
            packet,
        )
        .unwrap_or_else(|e| panic!("trace {node} {packet}: {e}"));
        let switch_text = cluster.nodes[*node]
            .ovs
            .appctl(&[
                "ofproto/trace",
                pipeline::BRIDGE,
                &report.packet,
                "--ct-next",
                "trk,new",
            ])
            .unwrap_or_else(|e| panic!("ofproto/trace {}: {e}", report.packet));
        let switch = parse_ofproto_trace(&switch_text, &v.odp_to_ofport);
        let ours = SwitchTrace {
            path: report.steps.iter().map(|s| s.table).collect(),
            outputs: match &report.verdict {
                Verdict::Output { port, .. } => vec![*port],
                Verdict::Refused { .. } => vec![openflow::port::CONTROLLER],
                _ => vec![],
            },
            tunnels: match &report.verdict {
                Verdict::Tunnel { remote_ip, .. } => vec![*remote_ip],
                _ => vec![],
            },
        };
        let mut expected = expected_ok(expect, &report, &cluster, v, xa);
        // A multipath: the link the switch wrote into reg7 is the one the trace computed.
        let switch_link = switch_text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-> NXM_NX_REG7[0..15] is now "))
            .map(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).expect("reg7 value"));
        let our_link = report.steps.iter().flat_map(|s| &s.effects).find_map(|e| {
            let (_, rest) = e.split_once(" picks link ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        });
        expected &= switch_link == our_link;
        // A default-method select group: the bucket the switch used is the trace's.
        let switch_bucket = switch_text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-> using bucket "))
            .map(|v| v.trim().parse::<usize>().expect("bucket number"));
        let our_bucket = report.steps.iter().flat_map(|s| &s.effects).find_map(|e| {
            let (head, _) = e.split_once(" scores highest")?;
            head.rsplit(' ').next()?.parse::<usize>().ok()
        });
        // (ofproto/trace says `using bucket` for a dp_hash group too: compared where the
        // trace took the default method, and for x/big, which must.)
        if our_bucket.is_some() || packet.contains("service:x/big") {
            expected &= switch_bucket == our_bucket;
        }
        if packet.contains("service:x/big") {
            expected &= our_bucket.is_some();
            big_buckets.extend(our_bucket);
        }
        if packet.contains("port=53/UDP sport=") {
            expected &= our_link.is_some();
            udp_verdicts.insert(format!("{:?}", report.verdict));
        }
        // A Service packet must have met its Service, and (but for a refusal) have been
        // DNATed on both sides (by a group bucket, or in EndpointDnat with affinity).
        if report.packet.contains("nw_dst=10.96.0.") {
            services += 1;
            expected &= report.service.is_some()
                && (matches!(report.verdict, Verdict::Refused { .. })
                    || (report
                        .service
                        .as_deref()
                        .is_some_and(|s| s.contains("→ endpoint"))
                        && switch_text.contains("nat(dst=")));
        }
        if ours != switch || !expected {
            failures.push(format!(
                "{node} {packet}\n  resolved: {}\n  trace:    {ours:?} {:?} link {our_link:?} bucket {our_bucket:?}\n  service:  {:?}\n  switch:   {switch:?} link {switch_link:?} bucket {switch_bucket:?}\n  expected {expect:?}: {}\n--- ofproto/trace ---\n{switch_text}",
                report.packet,
                report.verdict,
                report.service,
                if expected { "yes" } else { "NO" },
            ));
        }
        longest = longest.max(switch.path.len());
        drops += usize::from(matches!(report.verdict, Verdict::Drop { .. }));
    }
    assert!(
        failures.is_empty(),
        "{} of {} traces disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(longest >= 5, "no case crossed five tables");
    assert!(drops >= 3, "too few drops were checked");
    assert!(services >= 10, "too few Service packets were checked");
    // The UDP cases reached every endpoint: a trace that always took link 0 would have
    // disagreed with the switch.
    assert!(
        big_buckets.len() >= 3,
        "the 300-endpoint Service's packets used too few buckets: {big_buckets:?}"
    );
    assert!(
        udp_verdicts.len() == DNS_ENDPOINTS.len(),
        "the UDP source ports did not reach every endpoint: {udp_verdicts:?}"
    );
}

fn expected_ok(
    expect: &Expect,
    report: &TraceReport,
    cluster: &DemoCluster,
    view: &NodeView,
    source: &switchyard_demo::DemoPod,
) -> bool {
    match (expect, &report.verdict) {
        (Expect::Pod(ns, name), Verdict::Output { port, .. }) => {
            view.pods.get(&ObjectKey::new(*ns, *name)).map(|p| p.ofport) == Some(*port)
        }
        (Expect::Gateway, Verdict::Output { port, .. }) => *port == pipeline::GATEWAY_OFPORT,
        (Expect::InPort, Verdict::Output { port, .. }) => {
            view.pods.get(&source.key).map(|p| p.ofport) == Some(*port)
        }
        (Expect::Tunnel(node), Verdict::Tunnel { node: n, remote_ip }) => {
            n == node && *remote_ip == cluster.nodes[*node].model.internal_ip
        }
        (Expect::Drop(why), Verdict::Drop { reason }) => reason.starts_with(why),
        (Expect::Refused(why), Verdict::Refused { reason }) => reason == why,
        (Expect::Any, _) => true,
        (Expect::AnyOf(any), _) => any
            .iter()
            .any(|e| expected_ok(e, report, cluster, view, source)),
        _ => false,
    }
}
