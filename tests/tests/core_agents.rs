//! The controller core (state task and node agents) against in-process simulated switches
//! that speak the real OpenFlow wire protocol: which switch hears about which event. No
//! root needed; OVSDB is simulated inside the agents (`SwitchDb::Simulated`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use switchyard::agent::StatePort;
use switchyard::ids::pod_cookie;
use switchyard::ipam::mac_for;
use switchyard::source::k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus,
};
use switchyard::source::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard::source::{Delta, Kind, Object, ObjectKey};
use switchyard::switch_config::{PodPort, datapath_id};
use switchyard_tests::sim_switch::SimSwitch;

const LIMIT: Duration = Duration::from_secs(30);

fn node(i: u8) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(format!("n{i}")),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!("10.240.{i}.0/24")),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: format!("192.168.50.{i}"),
            }]),
            ..Default::default()
        }),
    }
}

fn pod(i: u8, j: u8, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p{i}-{j}")),
            namespace: Some("default".into()),
            resource_version: Some(format!("{phase}-rv")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("n{i}")),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

fn ip(i: u8, j: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 240, i, 10 + j)
}

fn port(i: u8, j: u8) -> PodPort {
    PodPort {
        iface: format!("v{i}-{j}"),
        pod: ObjectKey::new("default", format!("p{i}-{j}")),
        ip: ip(i, j),
        mac: mac_for(ip(i, j)),
        container_id: format!("c{i}-{j}"),
    }
}

fn bundles(switches: &BTreeMap<u8, SimSwitch>) -> BTreeMap<u8, u64> {
    switches
        .iter()
        .map(|(i, s)| (*i, s.stats().bundles))
        .collect()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_event_reaches_only_its_node_and_an_unchanged_republication_none() {
    let dir = tempfile::tempdir().unwrap();
    let sim = switchyard_tests::sim_core::SimulatedCore::start(dir.path()).await;
    let (core, deltas) = (sim.core.clone(), sim.deltas.clone());
    let initial = |phase: &str| -> Vec<Delta> {
        let mut batch: Vec<Delta> = (1..=3)
            .map(|i| Delta::Apply(Object::from(node(i))))
            .collect();
        for i in 1..=3 {
            for j in 0..2 {
                batch.push(Delta::Apply(Object::from(pod(i, j, phase))));
            }
        }
        batch
    };
    deltas.send(initial("Pending")).unwrap();
    let mut snapshots = core.state.subscribe();
    while snapshots.borrow_and_update().pod_count() < 6 {
        snapshots.changed().await.unwrap();
    }
    for i in 1..=3 {
        core.state
            .restore_attachments(&format!("n{i}"), (0..2).map(|j| port(i, j)).collect())
            .await
            .unwrap();
    }
    let mut switches = BTreeMap::new();
    for i in 1..=3u8 {
        let s = SimSwitch::connect(&sim.target, datapath_id(&format!("n{i}")))
            .await
            .unwrap();
        switches.insert(i, s);
    }
    // 19 skeleton + 5 gateway + 2 pods × 7 + 2 remote nodes + 6 policy base (conntrack
    // bypass 4, the node's own traffic from its 2 addresses) + 10 Service base (hairpin, SessionAffinity default,
    // the gateway SNAT of external Service traffic, the refusal of unknown nodePorts).
    eventually("every switch to hold its pipeline", || {
        switches.values().all(|s| s.flow_count() == 56)
    })
    .await;
    eventually("every agent ready", || {
        core.agents
            .lock()
            .unwrap()
            .values()
            .all(|a| a.status.borrow().ready)
    })
    .await;
    let before = bundles(&switches);

    // The same objects again, with only status and resourceVersion changed (what a kube
    // re-list or status churn delivers), then one real change on n1. Deltas are applied in
    // order, so once n1's bundle arrives the republication has been handled too.
    deltas.send(initial("Running")).unwrap();
    let key = ObjectKey::new("default", "p1-9");
    let mut new_pod = pod(1, 9, "Pending");
    new_pod.metadata.name = Some("p1-9".into());
    deltas
        .send(vec![Delta::Apply(Object::from(new_pod))])
        .unwrap();
    let attached = loop {
        match core.state.attach(&key, "v1-9", "c1-9").await {
            Ok(a) => break a,
            Err(_) => tokio::task::yield_now().await,
        }
    };
    eventually("n1's bundle", || switches[&1].stats().bundles > before[&1]).await;
    eventually("n1's pipeline with the new pod", || {
        switches[&1].flow_count() == 63
    })
    .await;
    let after = bundles(&switches);
    assert_eq!(after[&1], before[&1] + 1, "one bundle on the pod's node");
    assert_eq!(after[&2], before[&2], "n2 heard nothing");
    assert_eq!(after[&3], before[&3], "n3 heard nothing");
    let cookie = pod_cookie(attached.ip);
    assert_eq!(
        switches[&1]
            .flows()
            .iter()
            .filter(|f| f.cookie == cookie)
            .count(),
        7
    );

    // A pod deleted on n2: only n2 changes, by exactly that pod's seven flows.
    let before = bundles(&switches);
    deltas
        .send(vec![Delta::Delete(
            Kind::Pod,
            ObjectKey::new("default", "p2-0"),
        )])
        .unwrap();
    eventually("n2's bundle", || switches[&2].stats().bundles > before[&2]).await;
    assert_eq!(switches[&2].flow_count(), 49);
    assert!(
        switches[&2]
            .flows()
            .iter()
            .all(|f| f.cookie != pod_cookie(ip(2, 0)))
    );
    let after = bundles(&switches);
    assert_eq!((after[&1], after[&3]), (before[&1], before[&3]));

    // A node added: every existing node gets one flow to it, in one bundle each.
    let before = bundles(&switches);
    deltas
        .send(vec![Delta::Apply(Object::from(node(4)))])
        .unwrap();
    eventually("a bundle on every node", || {
        bundles(&switches).iter().all(|(i, b)| *b == before[i] + 1)
    })
    .await;
    assert_eq!(switches[&3].flow_count(), 57);
    drop(sim);
}
