use super::*;

fn np(spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": spec,
    }))
    .expect("a NetworkPolicy")
}

fn model(spec: serde_json::Value) -> Result<PolicyModel, Problem> {
    policy_model(&ObjectKey::new("x", "p"), &np(spec))
}

#[test]
fn policy_types_default_as_the_api_server_does() {
    let m = model(serde_json::json!({"podSelector": {}})).unwrap();
    assert_eq!(m.ingress, Some(vec![]), "Ingress always: deny all ingress");
    assert_eq!(m.egress, None, "no egress rules: not isolated for egress");
    let m = model(serde_json::json!({"podSelector": {}, "egress": [{}]})).unwrap();
    assert!(m.ingress.is_some() && m.egress.as_ref().is_some_and(|e| e.len() == 1));
    let m =
        model(serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
            .unwrap();
    assert_eq!(
        m.ingress, None,
        "ingress rules of a type not listed are ignored"
    );
    assert_eq!(m.egress, Some(vec![]), "deny all egress");
}

#[test]
fn ports_default_to_tcp_and_ranges_named_ports_and_protocol_only_are_kept() {
    let m = model(
        serde_json::json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80},
            {"protocol": "UDP", "port": 81, "endPort": 90},
            {"protocol": "SCTP"},
            {"port": "serve-80-tcp"},
        ]}]}),
    )
    .unwrap();
    let ports = m.ingress.unwrap()[0].ports.clone().unwrap();
    assert_eq!(
        ports,
        vec![
            PolicyPort {
                protocol: Protocol::Tcp,
                port: PortMatch::Range(80, 80)
            },
            PolicyPort {
                protocol: Protocol::Udp,
                port: PortMatch::Range(81, 90)
            },
            PolicyPort {
                protocol: Protocol::Sctp,
                port: PortMatch::Any
            },
            PolicyPort {
                protocol: Protocol::Tcp,
                port: PortMatch::Named("serve-80-tcp".into())
            },
        ]
    );
}

#[test]
fn invalid_policies_name_the_field() {
    for (spec, field) in [
        (
            serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"port": "web", "endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            serde_json::json!({"podSelector": {}, "egress": [{"to": [{}]}]}),
            "spec.egress[0].to[0]",
        ),
        (
            serde_json::json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]",
        ),
        (
            serde_json::json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
            "spec.podSelector.matchExpressions[0].operator",
        ),
        (
            serde_json::json!({"podSelector": {}, "policyTypes": ["Sideways"]}),
            "spec.policyTypes[0]",
        ),
    ] {
        let p = model(spec).unwrap_err();
        assert_eq!(p.field, field, "{p}");
        assert_eq!(p.object, "NetworkPolicy/x/p");
    }
}

#[test]
fn except_is_taken_out_as_disjoint_prefixes() {
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    let parts = subtract(
        net("10.0.0.0/24"),
        &[net("10.0.0.128/25"), net("10.0.0.4/32")],
    );
    assert_eq!(
        parts,
        [
            "10.0.0.0/30",
            "10.0.0.5/32",
            "10.0.0.6/31",
            "10.0.0.8/29",
            "10.0.0.16/28",
            "10.0.0.32/27",
            "10.0.0.64/26"
        ]
        .map(net)
    );
    // Every address is in the result exactly when it is in the cidr and in no except.
    for i in 0..=255u8 {
        let ip = Ipv4Addr::new(10, 0, 0, i);
        let inside = parts.iter().filter(|n| n.contains(&ip)).count();
        assert_eq!(inside, usize::from(i < 128 && i != 4), "{ip}");
    }
}

#[test]
fn port_ranges_become_masked_matches_covering_exactly_the_range() {
    assert_eq!(port_masks(80, 80), vec![(80, 0xffff)]);
    assert_eq!(port_masks(80, 81), vec![(80, 0xfffe)]);
    assert_eq!(port_masks(1, 65535).len(), 16);
    for (a, b) in [
        (80, 81),
        (81, 90),
        (1000, 2000),
        (0, 65535),
        (65535, 65535),
        (3, 3000),
    ] {
        let m = port_masks(a, b);
        for p in 0..=65535u16 {
            let hits = m.iter().filter(|(v, mask)| p & mask == *v).count();
            assert_eq!(hits, usize::from(p >= a && p <= b), "{a}-{b}: port {p}");
        }
    }
}

#[test]
fn selectors_implement_every_operator() {
    let sel: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ]
    }))
    .unwrap();
    let s = Selector::parse(&sel, "s").unwrap();
    let l = |pairs: &[(&str, &str)]| {
        let mut v: Labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    assert!(s.matches(&l(&[("app", "web"), ("tier", "a"), ("team", "t")])));
    assert!(s.matches(&l(&[
        ("app", "web"),
        ("tier", "b"),
        ("team", "t"),
        ("env", "dev")
    ])));
    assert!(!s.matches(&l(&[("app", "web"), ("tier", "c"), ("team", "t")])));
    assert!(!s.matches(&l(&[
        ("app", "web"),
        ("tier", "a"),
        ("team", "t"),
        ("env", "prod")
    ])));
    assert!(!s.matches(&l(&[("app", "web"), ("tier", "a")])));
    assert!(!s.matches(&l(&[
        ("app", "web"),
        ("tier", "a"),
        ("team", "t"),
        ("legacy", "1")
    ])));
    assert!(!s.matches(&l(&[("app", "db"), ("tier", "a"), ("team", "t")])));
    assert_eq!(s.anchor(), Some(("app", "web")));
    assert!(Selector::default().matches(&[]));
}
