use super::*;
use crate::ids;
use crate::source::ObjectKey;
use crate::state::NetworkState;
use crate::state::testing::{apply, node, pod};

/// An Ethernet + IPv4 + L4 frame (ports only; the rest of the L4 header zero).
fn frame(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![0x0a, 0x58, 0, 0, 0, 1, 0x0a, 0x58, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f
}

fn state() -> (NetworkState, Ipv4Addr, Ipv4Addr) {
    let mut s = NetworkState::new();
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "x",
                "annotations": {crate::policy::AUDIT_ANNOTATION: "true"}},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]},
                    {"ports": [{"port": 443}]}]}}))
        .unwrap();
    let other: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "also", "namespace": "x"},
            "spec": {"podSelector": {}}}))
        .unwrap();
    s.apply(vec![
        apply(node("n1", "10.244.1.0/24", "192.168.77.11")),
        apply(pod("x", "web", "n1", &[("app", "web")])),
        apply(pod("x", "cli", "n1", &[("app", "cli")])),
        apply(policy),
        apply(other),
    ]);
    s.attach(&ObjectKey::new("x", "web"), "vweb", "c")
        .0
        .unwrap();
    s.attach(&ObjectKey::new("x", "cli"), "vcli", "c")
        .0
        .unwrap();
    let snap = s.snapshot();
    let web = snap.attachment(&ObjectKey::new("x", "web")).unwrap().ip;
    let cli = snap.attachment(&ObjectKey::new("x", "cli")).unwrap().ip;
    (s, web, cli)
}

#[test]
fn a_rule_cookie_is_an_allow_by_that_rule_and_a_target_cookie_the_default_deny() {
    let (s, web, cli) = state();
    let snap = s.snapshot();
    assert!(snap.policy(&ObjectKey::new("x", "web")).unwrap().audit);
    assert!(!snap.policy(&ObjectKey::new("x", "also")).unwrap().audit);
    let rule = crate::state::RuleKey {
        policy: ObjectKey::new("x", "web"),
        direction: Direction::Ingress,
        index: 1,
    };
    let id = snap.conj_id(&rule).unwrap();
    assert_eq!(snap.rule_with_conj_id(id), Some(&rule));
    let syn = frame(6, cli.octets(), 40000, web.octets(), 443);
    let allow = record("n1", ids::policy_rule_cookie(id), &syn, &snap).unwrap();
    assert_eq!(
        allow.to_string(),
        format!(
            "node=n1 verdict=allow policy=x/web direction=ingress rule=1 proto=TCP src={cli}:40000 dst={web}:443"
        )
    );
    let udp = frame(17, cli.octets(), 5353, web.octets(), 81);
    let deny = record(
        "n1",
        ids::policy_target_cookie(Direction::Ingress, web),
        &udp,
        &snap,
    )
    .unwrap();
    assert_eq!(deny.verdict, Verdict::DefaultDeny);
    assert_eq!(
        deny.to_string(),
        format!(
            "node=n1 verdict=default-deny policy=x/also,x/web direction=ingress rule=- proto=UDP src={cli}:5353 dst={web}:81"
        ),
        "both isolating policies, audited or not"
    );
    // Egress: no policy isolates x/cli for egress.
    let egress = record(
        "n1",
        ids::policy_target_cookie(Direction::Egress, cli),
        &udp,
        &snap,
    )
    .unwrap();
    assert_eq!(egress.direction, Some(Direction::Egress));
    assert!(egress.policies.is_empty());
    // A conjunction id nobody holds: logged without a policy.
    let gone = record("n1", ids::policy_rule_cookie(7), &syn, &snap).unwrap();
    assert!(gone.to_string().contains("policy=- direction=- rule=-"));
    // Not a policy cookie, not IPv4: nothing.
    assert!(!is_audit(ids::pod_cookie(web)));
    assert_eq!(record("n1", ids::pod_cookie(web), &syn, &snap), None);
    assert_eq!(
        record("n1", ids::policy_rule_cookie(id), &syn[..20], &snap),
        None
    );
}

#[test]
fn five_tuples_of_icmp_and_later_fragments_have_no_ports() {
    let icmp = frame(1, [10, 0, 0, 1], 0x0800, [10, 0, 0, 2], 0);
    let t = FiveTuple::of_frame(&icmp).unwrap();
    assert_eq!((t.src_port, t.dst_port), (0, 0));
    let mut later = frame(17, [10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
    later[14 + 7] = 8; // fragment offset 8
    let t = FiveTuple::of_frame(&later).unwrap();
    assert_eq!((t.protocol, t.src_port, t.dst_port), (17, 0, 0));
    let mut arp = icmp.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(FiveTuple::of_frame(&arp), None);
}

#[test]
fn a_connection_is_logged_once_per_window_and_counted_by_verdict() {
    let (s, web, cli) = state();
    let snap = s.snapshot();
    let log = AuditLog::default();
    let cookie = ids::policy_target_cookie(Direction::Ingress, web);
    let syn = frame(6, cli.octets(), 40001, web.octets(), 80);
    // The SYN and its retransmission: one line.
    log.packet_in("n1", cookie, &syn, &snap);
    log.packet_in("n1", cookie, &syn, &snap);
    let other = frame(6, cli.octets(), 40002, web.octets(), 80);
    log.packet_in("n1", cookie, &other, &snap);
    log.packet_in("n1", cookie, &syn[..10], &snap);
    let text = log.encode_metrics();
    assert!(
        text.contains("switchyard_policy_audit_lines_total{verdict=\"default-deny\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_policy_audit_repeats_total 1"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_policy_audit_undecoded_total 1"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    // The window forgets.
    let mut recent = Recent::default();
    let t0 = Instant::now();
    let key = ("n1".to_owned(), cookie, FiveTuple::of_frame(&syn).unwrap());
    assert!(recent.first(t0, key.clone()));
    assert!(!recent.first(t0 + Duration::from_secs(1), key.clone()));
    assert!(recent.first(t0 + REPEAT_WINDOW + Duration::from_secs(1), key));
}

#[test]
fn the_file_gets_the_same_lines_and_bad_settings_are_refused() {
    let (s, web, cli) = state();
    let snap = s.snapshot();
    let dir = std::env::temp_dir().join(format!("sypl-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.log");
    let log = AuditLog::new(AuditConfig {
        file: Some(path.clone()),
        ..AuditConfig::default()
    })
    .unwrap();
    let syn = frame(6, cli.octets(), 40003, web.octets(), 80);
    log.packet_in(
        "n1",
        ids::policy_target_cookie(Direction::Ingress, web),
        &syn,
        &snap,
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().next().unwrap();
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(stamp.parse::<f64>().is_ok(), "{line}");
    assert!(
        rest.starts_with("node=n1 verdict=default-deny policy=x/also,x/web"),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let e = AuditLog::new(AuditConfig {
        rate: 0,
        ..AuditConfig::default()
    })
    .unwrap_err();
    assert!(e.contains("--policy-audit-rate"), "{e}");
    let e = AuditLog::new(AuditConfig {
        file: Some("/nonexistent-dir/audit.log".into()),
        ..AuditConfig::default()
    })
    .unwrap_err();
    assert!(
        e.contains("--policy-audit-file /nonexistent-dir/audit.log"),
        "{e}"
    );
}

#[test]
fn meter_stats_give_the_band_drops_of_the_audit_meter() {
    let stats = |id: u32, drops: u64| {
        let mut b = BytesMut::new();
        b.put_u32(id);
        b.put_u16(56);
        b.put_bytes(0, 6);
        b.put_u32(3); // flow_count
        b.put_u64(1000); // packet_in_count
        b.put_u64(64000); // byte_in_count
        b.put_u32(5);
        b.put_u32(0);
        b.put_u64(drops);
        b.put_u64(drops * 64);
        b
    };
    let mut body = stats(1, 5);
    body.put_slice(&stats(AUDIT_METER_ID, 42));
    assert_eq!(band_drops(&body), Some(42));
    assert_eq!(band_drops(&stats(1, 5)), None);
    assert_eq!(band_drops(&body[..30]), None);
}
