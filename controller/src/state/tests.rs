use super::testing::*;
use super::*;

fn two_nodes() -> NetworkState {
    let mut s = NetworkState::new();
    let cs = s.apply(vec![
        apply(node("n1", "10.244.1.0/24", "192.168.77.11")),
        apply(node("n2", "10.244.2.0/24", "192.168.77.12")),
        apply(pod("x", "a", "n1", &[("app", "web")])),
        apply(pod("x", "b", "n2", &[("app", "db")])),
    ]);
    assert_eq!(cs.version, 1);
    s
}

fn pod_change(ns: &str, name: &str, node: &str) -> Change {
    Change::Pod {
        key: ObjectKey::new(ns, name),
        node: node.into(),
    }
}

#[test]
fn the_initial_list_is_one_change_set_with_every_node_and_pod() {
    let mut s = NetworkState::new();
    // Pods may come before their node in a batch: they are networked all the same.
    let cs = s.apply(vec![
        apply(pod("x", "a", "n1", &[])),
        apply(node("n1", "10.244.1.0/24", "192.168.77.11")),
    ]);
    assert_eq!(
        cs.changes,
        vec![Change::NodeAdded("n1".into()), pod_change("x", "a", "n1")]
    );
    let snap = s.snapshot();
    assert_eq!(snap.pods_on("n1").count(), 1);
    assert_eq!(snap.pod_count(), 1);
}

#[test]
fn a_change_set_marks_exactly_the_owner_that_changed() {
    let mut s = two_nodes();
    let cs = s.apply(vec![apply(pod("x", "a", "n1", &[("app", "api")]))]);
    assert_eq!(cs.changes, vec![pod_change("x", "a", "n1")]);
    assert_eq!(cs.version, 2);
    let snap = s.snapshot();
    assert_eq!(snap.pods_with_label("app", "api").count(), 1);
    assert_eq!(snap.pods_with_label("app", "web").count(), 0);
    assert_eq!(snap.pods_in_namespace("x").count(), 2);

    let cs = s.apply(vec![delete_pod("x", "b")]);
    assert_eq!(cs.changes, vec![pod_change("x", "b", "n2")]);
    assert_eq!(s.snapshot().pods_on("n2").count(), 0);
    assert_eq!(s.snapshot().pods_with_label("app", "db").count(), 0);
}

#[test]
fn updates_that_change_nothing_the_network_uses_do_no_work() {
    let mut s = two_nodes();
    let mut p = pod("x", "a", "n1", &[("app", "web")]);
    p.metadata.resource_version = Some("999".into());
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.244.1.2".into()),
        ..Default::default()
    });
    let before = s.snapshot().version;
    let cs = s.apply(vec![
        apply(p),
        apply(node("n1", "10.244.1.0/24", "192.168.77.11")),
    ]);
    assert!(cs.is_empty(), "{cs:?}");
    assert_eq!(cs.version, before, "the version moves only with a change");
}

#[test]
fn an_invalid_node_update_keeps_the_last_good_version() {
    let mut s = two_nodes();
    // A /32 pod CIDR, and a node without InternalIP: both invalid edits of n2.
    let cs = s.apply(vec![apply(node("n2", "10.244.2.0/32", "192.168.77.12"))]);
    assert!(cs.is_empty());
    let mut no_ip = node("n2", "10.244.2.0/24", "192.168.77.12");
    no_ip.status = None;
    let cs = s.apply(vec![apply(no_ip)]);
    assert!(cs.is_empty());
    let snap = s.snapshot();
    assert_eq!(
        snap.node("n2").unwrap().pod_cidr.to_string(),
        "10.244.2.0/24"
    );
    assert_eq!(snap.pods_on("n2").count(), 1, "its pods stay networked");
    let problems: Vec<String> = s.problems().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("Node/n2: status.addresses"),
        "{problems:?}"
    );
    // A valid version is taken again, and the problem goes away.
    let cs = s.apply(vec![apply(node("n2", "10.244.2.0/24", "192.168.77.22"))]);
    assert_eq!(cs.changes, vec![Change::NodeChanged("n2".into())]);
    assert_eq!(s.problems().count(), 0);
}

#[test]
fn of_two_overlapping_nodes_the_one_in_use_wins_whatever_the_names() {
    let mut s = two_nodes();
    // "a-new" sorts before "n2": the old rule (first by name) would have evicted n2.
    let cs = s.apply(vec![apply(node("a-new", "10.244.2.0/25", "192.168.77.13"))]);
    assert!(cs.is_empty());
    assert!(s.snapshot().node("n2").is_some());
    assert!(s.snapshot().node("a-new").is_none());
    let shown: Vec<String> = s.problems().map(|p| p.to_string()).collect();
    assert!(
        shown[0].contains(
            "Node/a-new: spec.podCIDR: 10.244.2.0/25 overlaps the pod CIDR 10.244.2.0/24 of node n2"
        ),
        "{shown:?}"
    );
}

#[test]
fn a_running_pod_keeps_its_node_when_an_edit_changes_it() {
    let mut s = two_nodes();
    let cs = s.apply(vec![apply(pod("x", "a", "nowhere", &[("app", "web")]))]);
    assert!(cs.is_empty());
    assert_eq!(
        s.snapshot().pod(&ObjectKey::new("x", "a")).unwrap().node,
        "n1"
    );
    let shown: Vec<String> = s.problems().map(|p| p.to_string()).collect();
    assert!(shown[0].starts_with("Pod/x/a: spec.nodeName: changed from n1 to nowhere"));
}

#[test]
fn a_pod_on_an_unknown_node_waits_for_the_node_and_is_reported() {
    let mut s = two_nodes();
    let cs = s.apply(vec![apply(pod("x", "c", "n3", &[]))]);
    assert!(cs.is_empty());
    assert_eq!(s.problems().count(), 1);
    let cs = s.apply(vec![apply(node("n3", "10.244.3.0/24", "192.168.77.13"))]);
    assert_eq!(
        cs.changes,
        vec![Change::NodeAdded("n3".into()), pod_change("x", "c", "n3")]
    );
    assert_eq!(s.problems().count(), 0);
}

#[test]
fn attach_gives_an_address_and_detach_keeps_it_for_the_pod() {
    let mut s = two_nodes();
    let key = ObjectKey::new("x", "a");
    let (r, cs) = s.attach(&key, "veth-a", "c1");
    let attached = r.unwrap();
    assert_eq!(attached.ip, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(cs.changes, vec![pod_change("x", "a", "n1")]);
    // The same ADD again changes nothing.
    let (r, cs) = s.attach(&key, "veth-a", "c1");
    assert_eq!(r.unwrap().ip, attached.ip);
    assert!(cs.is_empty());
    // A DEL for another sandbox leaves the attachment alone.
    let (node, cs) = s.detach(&key, "c0");
    assert_eq!(node, None);
    assert!(cs.is_empty());
    let (gone, cs) = s.detach(&key, "c1");
    assert_eq!(gone.map(|d| d.node).as_deref(), Some("n1"));
    assert_eq!(cs.changes, vec![pod_change("x", "a", "n1")]);
    // DEL is idempotent.
    let (gone, cs) = s.detach(&key, "c1");
    assert!(gone.is_none() && cs.is_empty());
    let (r, _) = s.attach(&key, "veth-a2", "c2");
    assert_eq!(r.unwrap().ip, attached.ip, "the pod keeps its address");
    // Unknown pods are refused.
    let (r, _) = s.attach(&ObjectKey::new("x", "zz"), "veth-z", "c");
    assert!(matches!(r, Err(AttachError::UnknownPod(_))));
}

#[test]
fn detach_without_a_pod_name_finds_the_attachment_by_container() {
    let mut s = two_nodes();
    let key = ObjectKey::new("x", "a");
    s.attach(&key, "veth-a", "c1").0.unwrap();
    let (gone, _) = s.detach(&ObjectKey::new("", ""), "c9");
    assert!(gone.is_none());
    let (gone, cs) = s.detach(&ObjectKey::new("", ""), "c1");
    assert_eq!(
        gone.map(|d| d.port.iface.clone()).as_deref(),
        Some("veth-a")
    );
    assert_eq!(cs.changes, vec![pod_change("x", "a", "n1")]);
}

#[test]
fn garbage_collection_detaches_what_the_runtime_does_not_list_on_that_node() {
    let mut s = two_nodes();
    let a = ObjectKey::new("x", "a");
    let b = ObjectKey::new("x", "b");
    s.attach(&a, "veth-a", "c1").0.unwrap();
    s.attach(&b, "veth-b", "c2").0.unwrap();
    let keep = std::collections::HashSet::from(["veth-a".to_owned()]);
    // b is on n2: GC of n1 leaves it alone, and a is listed.
    let (gone, cs) = s.collect_garbage("n1", &keep);
    assert!(gone.is_empty() && cs.is_empty());
    let (gone, cs) = s.collect_garbage("n2", &keep);
    assert_eq!(gone.len(), 1);
    assert_eq!(cs.changes, vec![pod_change("x", "b", "n2")]);
    assert!(s.snapshot().attachment(&b).is_none());
    assert!(s.snapshot().attachment(&a).is_some());
}

#[test]
fn deleting_a_node_releases_its_pods_until_it_returns() {
    let mut s = two_nodes();
    let key = ObjectKey::new("x", "b");
    let (r, _) = s.attach(&key, "veth-b", "c1");
    r.unwrap();
    let cs = s.apply(vec![delete_node("n2")]);
    assert_eq!(cs.changes, vec![Change::NodeRemoved("n2".into())]);
    assert!(s.snapshot().attachment(&key).is_none());
    assert!(s.snapshot().pod(&key).is_none());
    let cs = s.apply(vec![apply(node("n2", "10.244.2.0/24", "192.168.77.12"))]);
    assert_eq!(
        cs.changes,
        vec![Change::NodeAdded("n2".into()), pod_change("x", "b", "n2")]
    );
}

#[test]
fn restored_attachments_keep_their_addresses() {
    let mut s = two_nodes();
    let port = PodPort {
        iface: "veth-a".into(),
        pod: ObjectKey::new("x", "a"),
        ip: Ipv4Addr::new(10, 244, 1, 9),
        mac: mac_for(Ipv4Addr::new(10, 244, 1, 9)),
        container_id: "c1".into(),
    };
    let stale = PodPort {
        pod: ObjectKey::new("x", "gone"),
        ..port.clone()
    };
    let cs = s.restore_attachments("n1", vec![port.clone(), stale]);
    assert_eq!(cs.changes, vec![pod_change("x", "a", "n1")]);
    assert_eq!(
        s.snapshot().attachment(&port.pod).map(|p| p.ip),
        Some(port.ip)
    );
    let (r, _) = s.attach(&port.pod, "veth-a", "c1");
    assert_eq!(r.unwrap().ip, port.ip);
}

#[test]
fn snapshots_are_consistent_while_the_state_moves_on() {
    let mut s = two_nodes();
    let before = s.snapshot();
    s.apply(vec![delete_pod("x", "a")]);
    assert_eq!(before.pods_on("n1").count(), 1);
    assert_eq!(s.snapshot().pods_on("n1").count(), 0);
}

#[test]
fn a_checked_attach_stays_on_the_callers_node_and_off_a_running_container() {
    let mut s = two_nodes();
    let key = ObjectKey::new("x", "a");
    let n2 = AttachRules {
        caller_node: Some("n2".into()),
        replaces: None,
    };
    let (r, cs) = s.attach_checked(&key, "veth-a", "c1", &n2);
    assert!(
        matches!(&r, Err(AttachError::OtherNode { node, caller, .. }) if node == "n1" && caller == "n2"),
        "{r:?}"
    );
    assert!(cs.is_empty() && s.snapshot().attachment(&key).is_none());
    let n1 = AttachRules {
        caller_node: Some("n1".into()),
        replaces: None,
    };
    let ip = s.attach_checked(&key, "veth-a", "c1", &n1).0.unwrap().ip;
    // The same container again is fine; another one is refused unless it names c1 dead.
    assert!(s.attach_checked(&key, "veth-a", "c1", &n1).0.is_ok());
    let (r, cs) = s.attach_checked(&key, "veth-b", "c2", &n1);
    assert!(
        matches!(&r, Err(AttachError::Running { running, .. }) if running == "c1"),
        "{r:?}"
    );
    assert!(cs.is_empty());
    assert_eq!(s.snapshot().attachment(&key).unwrap().container_id, "c1");
    let stale = AttachRules {
        caller_node: None,
        replaces: Some("c0".into()),
    };
    assert!(s.attach_checked(&key, "veth-b", "c2", &stale).0.is_err());
    let dead = AttachRules {
        caller_node: None,
        replaces: Some("c1".into()),
    };
    let taken = s.attach_checked(&key, "veth-b", "c2", &dead).0.unwrap();
    assert_eq!(taken.ip, ip, "the pod keeps its address");
    assert!(!taken.fresh_address);
    assert_eq!(s.snapshot().attachment(&key).unwrap().iface, "veth-b");
}

#[test]
fn a_failed_first_add_gives_its_address_back() {
    let mut s = two_nodes();
    let key = ObjectKey::new("x", "a");
    let first = s.attach(&key, "veth-a", "c1").0.unwrap();
    assert!(first.fresh_address);
    // Still attached: the address stays.
    s.release_unattached(&key);
    assert_eq!(s.ipam.address_of(&key), Some(first.ip));
    s.detach(&key, "c1");
    s.release_unattached(&key);
    assert_eq!(s.ipam.address_of(&key), None);
}
