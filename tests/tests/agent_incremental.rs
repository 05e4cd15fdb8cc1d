//! Work per event does not grow with the node: a NetworkPolicy change (flows only) makes
//! the node's agent realise new flows without planning the node's OVSDB rows again (no
//! replica copy, no comparison over every port), nor does vswitchd's periodic rewrite of
//! br-int's controller status, while a pod attach does plan them. Counted
//! by the controller's `switchyard_ovsdb_plans` metric, judged by ovs-ofctl.

use std::time::Duration;

use switchyard_tests::cni_node::{CniNode, NODE};

const DEADLINE: Duration = Duration::from_secs(60);
const CHANGES: u16 = 12;

fn plans(node: &CniNode) -> u64 {
    let (code, body) = node.metrics_get("/metrics");
    assert_eq!(code, 200, "{body}");
    let name = format!("switchyard_ovsdb_plans{{node=\"{NODE}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&name))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .expect("a number")
}

fn policy(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - ports: [{{protocol: TCP, port: {port}}}]\n"
    )
}

fn has_port_flow(node: &CniNode, port: u16) -> bool {
    node.ovs
        .ofctl("dump-flows", "br-int", &["--no-stats"])
        .lines()
        .any(|l| l.contains(&format!("tp_dst={port} ")) || l.contains(&format!("tp_dst={port},")))
}

#[test]
fn a_policy_change_does_not_replan_the_nodes_ovsdb_but_an_attach_does() {
    switchyard_tests::skip_unless_root!();
    let mut node = CniNode::start(&[("default", "a"), ("default", "b")]);
    let pod_a = node.pod_netns();
    let add = node.shim_run(
        "ADD",
        "default/a",
        "c-a",
        &pod_a.path().display().to_string(),
        &[],
    );
    assert_eq!(add.code(), None, "ADD a: {:?}", add.json());

    node.set_documents(vec![policy(1000)]);
    assert!(
        switchyard_tests::wait_for(DEADLINE, || has_port_flow(&node, 1000)).is_some(),
        "the policy's port flow never appeared:\n{}",
        node.controller_log()
    );
    let before = plans(&node);
    for i in 1..=CHANGES {
        let port = 1000 + i;
        node.set_documents(vec![policy(port)]);
        assert!(
            switchyard_tests::wait_for(DEADLINE, || has_port_flow(&node, port)
                && !has_port_flow(&node, port - 1))
            .is_some(),
            "policy change {i} (port {port}) was not realised"
        );
    }
    let after_policies = plans(&node);
    // Each change woke the agent and was realised; none changed an OVSDB row, a node or an
    // attachment. (One plan may still come from the replica confirming a port's last
    // columns after the attach.)
    assert!(
        after_policies - before <= 1,
        "{} OVSDB plans for {CHANGES} policy changes that touch no row",
        after_policies - before
    );

    // vswitchd rewrites br-int's Controller status (`sec_since_connect`) every 5 s: a
    // volatile column for the agent, read for connection errors, no reason to plan again.
    let since_connect = |node: &CniNode| {
        node.ovs
            .vsctl(&[
                "--if-exists",
                "get",
                "Controller",
                "br-int",
                "status:sec_since_connect",
            ])
            .trim()
            .to_owned()
    };
    let rewritten = |rewrite: u32| {
        let seen = since_connect(&node);
        assert!(
            switchyard_tests::wait_for(DEADLINE, || since_connect(&node) != seen).is_some(),
            "vswitchd did not rewrite br-int's controller status ({rewrite})"
        );
    };
    // One rewrite to let the last policy change settle, then two watched.
    rewritten(0);
    let idle = plans(&node);
    rewritten(1);
    rewritten(2);
    assert_eq!(
        plans(&node),
        idle,
        "the agent planned the node's OVSDB again for vswitchd's status rewrites"
    );

    let pod_b = node.pod_netns();
    let add = node.shim_run(
        "ADD",
        "default/b",
        "c-b",
        &pod_b.path().display().to_string(),
        &[],
    );
    assert_eq!(add.code(), None, "ADD b: {:?}", add.json());
    assert!(
        plans(&node) > after_policies,
        "an attach must plan the node's OVSDB (its port)"
    );
}
