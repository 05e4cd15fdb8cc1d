//! The simulated switch against the `openflow` crate's own controller side (`Listener`,
//! `Connection`): handshake, bundles (committed, rejected when added, failed at commit),
//! flow-mod semantics, multi-part dumps, errors for what it does not model, and 200
//! switches on one listener. No root needed.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use openflow::message::flow_mod::flags;
use openflow::{
    Action, Bucket, Error, Field, FlowMod, FlowModCommand, FlowStats, FlowStatsRequest, GroupMod,
    GroupType, Instruction, Listener, Match, MatchField, Message, MeterMod, MultipartRequest,
    MultipartRequestBody, Role, port,
};
use switchyard_tests::sim_switch::{Phase, SimSwitch};

const LIMIT: Duration = Duration::from_secs(30);

/// A listener on a unix socket in a fresh temporary directory, and its `unix:` target.
async fn listener() -> (tempfile::TempDir, Listener, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("of.sock");
    let listener = Listener::bind(&format!("punix:{}", path.display()))
        .await
        .unwrap();
    (dir, listener, format!("unix:{}", path.display()))
}

/// One switch connected and accepted.
async fn pair(dpid: u64) -> (tempfile::TempDir, SimSwitch, openflow::Connection) {
    let (dir, mut listener, target) = listener().await;
    let sim = SimSwitch::connect(&target, dpid).await.unwrap();
    let conn = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.datapath_id(), dpid);
    assert_eq!(conn.features().n_tables, 254);
    assert!(sim.wait_ready(LIMIT).await);
    (dir, sim, conn)
}

/// Flow `i` of a controller-like shape, in one of ten tables, with a long enough action
/// list that 1000 of them need more than one 64 KiB reply part.
fn flow(i: u32) -> FlowMod {
    let table = (i % 10) as u8 * 10;
    let m = Match::new()
        .with(MatchField::u32(Field::InPort, 1 + i % 7))
        .unwrap()
        .with(MatchField::u16(Field::EthType, 0x0800))
        .unwrap()
        .with(MatchField::ipv4_prefix(
            Field::Ipv4Dst,
            Ipv4Addr::from(0x0a00_0000 + (i << 8)),
            24,
        ))
        .unwrap()
        .with(MatchField::u32(Field::Reg(0), i))
        .unwrap();
    let mut fm = FlowMod::add(
        table,
        100 + (i % 5) as u16,
        m,
        vec![Instruction::ApplyActions(vec![
            Action::set_field(MatchField::u32(Field::Reg(1), i * 3)),
            Action::set_field(MatchField::u32(Field::Reg(2), i * 5)),
            Action::resubmit_table(table + 1),
            Action::output(1 + i % 3),
        ])],
    )
    .with_cookie(0x1000 + u64::from(i % 4));
    fm.flags = flags::SEND_FLOW_REM;
    fm
}

/// What identifies a flow and what it does, comparable between sent and dumped.
type Seen = (u8, u16, u64, u16, Match, Vec<Instruction>);

fn seen_stats(f: &FlowStats) -> Seen {
    (
        f.table_id,
        f.priority,
        f.cookie,
        f.flags,
        f.match_.clone(),
        f.instructions.clone(),
    )
}

fn seen_mod(f: &FlowMod) -> Seen {
    seen_stats(&FlowStats::from(f))
}

fn set<'a>(it: impl IntoIterator<Item = &'a FlowStats>) -> HashSet<Seen> {
    it.into_iter().map(seen_stats).collect()
}

#[tokio::test]
async fn bundles_dumps_modify_delete_and_rejected_bundles() {
    let (_dir, sim, conn) = pair(0xabc).await;
    let mut events = conn.take_events().unwrap();

    // 1000 adds in one bundle; the dump returns exactly them, in several parts.
    let flows: Vec<FlowMod> = (0..1000).map(flow).collect();
    let sent: HashSet<Seen> = flows.iter().map(seen_mod).collect();
    assert_eq!(sent.len(), 1000);
    conn.bundle(flows.iter().cloned().map(Message::from).collect())
        .await
        .unwrap();
    assert_eq!(sim.flow_count(), 1000);
    let dumped = conn.dump_flows(FlowStatsRequest::default()).await.unwrap();
    assert_eq!(dumped.len(), 1000);
    assert_eq!(set(&dumped), sent);
    assert_eq!(set(&sim.flows()), sent);
    let s = sim.stats();
    assert!(
        s.multipart_parts_sent >= 2,
        "1000 flows fit in one 64 KiB part? {s:?}"
    );
    assert_eq!((s.flow_mods, s.bundles, s.bundle_messages), (1000, 1, 1000));
    assert!(s.last_bundle_at.is_some());

    // Filters: one table, one cookie, a loose match.
    let t30 = conn.dump_flows(FlowStatsRequest::table(30)).await.unwrap();
    assert_eq!(t30.len(), 100);
    assert!(t30.iter().all(|f| f.table_id == 30));
    let c1 = conn
        .dump_flows(FlowStatsRequest::default().with_cookie(0x1001, u64::MAX))
        .await
        .unwrap();
    assert_eq!(c1.len(), 250);
    assert!(c1.iter().all(|f| f.cookie == 0x1001));
    let by_port = FlowStatsRequest {
        match_: Match::new()
            .with(MatchField::u32(Field::InPort, 3))
            .unwrap(),
        ..FlowStatsRequest::default()
    };
    let p3 = conn.dump_flows(by_port).await.unwrap();
    assert_eq!(p3.len(), (0..1000).filter(|i| 1 + i % 7 == 3).count());

    // Modify strict: new instructions, same cookie and flags.
    let mut m = flow(7);
    m.command = FlowModCommand::ModifyStrict;
    m.flags = 0;
    m.cookie = 0;
    m.instructions = vec![Instruction::ApplyActions(vec![Action::output(42)])];
    conn.apply(&[m.clone().into()]).await.unwrap();
    let now = conn.dump_flows(FlowStatsRequest::table(70)).await.unwrap();
    let f7 = now.iter().find(|f| f.match_ == flow(7).match_).unwrap();
    assert_eq!(f7.instructions, m.instructions);
    assert_eq!(f7.cookie, flow(7).cookie);
    assert_eq!(f7.flags, flags::SEND_FLOW_REM);
    assert_eq!(sim.flow_count(), 1000);

    // Delete strict: gone, and reported like OVS does for a send_flow_rem flow.
    let d = flow(8);
    conn.bundle(vec![
        FlowMod::delete_strict(d.table_id, d.priority, d.match_.clone()).into(),
    ])
    .await
    .unwrap();
    assert_eq!(sim.flow_count(), 999);
    let removed = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    match removed {
        Message::FlowRemoved(r) => {
            assert_eq!(
                (r.table_id, r.priority, r.cookie),
                (80, d.priority, d.cookie)
            );
            assert_eq!(r.match_, d.match_);
            assert_eq!(r.reason, 2);
        }
        other => panic!("expected FLOW_REMOVED, got {other:?}"),
    }
    let mut expected: HashSet<Seen> = sent.clone();
    expected.remove(&seen_mod(&d));
    expected.remove(&seen_mod(&flow(7)));
    expected.insert(seen_mod(&FlowMod {
        instructions: m.instructions.clone(),
        ..flow(7)
    }));
    let before = conn.dump_flows(FlowStatsRequest::default()).await.unwrap();
    assert_eq!(set(&before), expected);

    // Rejected when added: a flow-mod adding to table 255. The bundle is discarded and
    // nothing of it applied.
    let bad = vec![
        FlowMod::delete(port::TABLE_ALL, Match::new()).into(),
        flow(5000).into(),
        FlowMod::add(255, 1, Match::new(), vec![]).into(),
    ];
    match conn.bundle(bad).await {
        Err(Error::BundleFailed {
            index: Some(2),
            error,
        }) => assert_eq!(error.name(), Some("OFPFMFC_BAD_TABLE_ID"), "{error}"),
        other => panic!("expected a failure at message 2, got {other:?}"),
    }
    // goto_table backwards is rejected the same way.
    let back = FlowMod::add(20, 1, Match::new(), vec![Instruction::GotoTable(10)]);
    match conn.bundle(vec![back.into()]).await {
        Err(Error::BundleFailed {
            index: Some(0),
            error,
        }) => assert_eq!(error.name(), Some("OFPBIC_BAD_TABLE_ID"), "{error}"),
        other => panic!("expected a failure at message 0, got {other:?}"),
    }

    // Rejected at commit: the second add of a group. Everything before it (deleting
    // every flow, the first group add) is rolled back.
    let group = GroupMod::add(
        7,
        GroupType::All,
        vec![Bucket::new(vec![Action::output(2)])],
    );
    let failing = vec![
        FlowMod::delete(port::TABLE_ALL, Match::new()).into(),
        Message::GroupMod(group.clone()),
        flow(6000).into(),
        Message::GroupMod(group.clone()),
    ];
    match conn.bundle(failing).await {
        Err(Error::BundleFailed {
            index: Some(3),
            error,
        }) => assert_eq!(error.name(), Some("OFPGMFC_GROUP_EXISTS"), "{error}"),
        other => panic!("expected a failure at message 3, got {other:?}"),
    }
    let after = conn.dump_flows(FlowStatsRequest::default()).await.unwrap();
    assert_eq!(set(&after), expected, "a failed bundle changed the table");
    assert!(conn.dump_groups().await.unwrap().is_empty());
    assert!(sim.groups().is_empty());

    // A group and a meter outside bundles.
    conn.apply(&[
        Message::GroupMod(group.clone()),
        Message::MeterMod(MeterMod::drop_above_pps(3, 1000, 100)),
    ])
    .await
    .unwrap();
    let groups = conn.dump_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group_id, 7);
    assert_eq!(groups[0].buckets, group.buckets);
    assert_eq!(sim.meters().len(), 1);
    match conn.apply(&[Message::GroupMod(group.clone())]).await {
        Err(Error::BundleFailed {
            index: Some(0),
            error,
        }) => {
            assert_eq!(error.name(), Some("OFPGMFC_GROUP_EXISTS"))
        }
        other => panic!("{other:?}"),
    }

    conn.barrier().await.unwrap();
    let s = sim.stats();
    assert_eq!(s.flow_mods, 1000 + 1 + 1, "{s:?}");
    assert_eq!(s.group_mods, 1, "{s:?}");
    assert_eq!(s.meter_mods, 1, "{s:?}");
    assert_eq!(s.bundles, 2, "{s:?}");
    assert_eq!(s.bundles_failed, 1, "{s:?}");
    assert_eq!(s.bundles_discarded, 2, "{s:?}");
    // Bad table, goto backwards, the failing message and the failed commit, the group.
    assert_eq!(s.errors_sent, 5, "{s:?}");
    assert_eq!(s.flow_removed_sent, 1, "{s:?}");
    assert!(s.barriers >= 1);
    assert!(sim.wait_for_bundles(2, Duration::ZERO).await);
    assert!(!sim.wait_for_bundles(3, Duration::from_millis(50)).await);
    assert_eq!(sim.commits().borrow().count, 2);
}

#[tokio::test]
async fn loose_deletes_and_modifies_select_by_cookie_table_and_match() {
    let (_dir, sim, conn) = pair(7).await;
    let flows: Vec<Message> = (0..200).map(|i| flow(i).into()).collect();
    conn.bundle(flows).await.unwrap();

    // By cookie across all tables (what a controller uses to clear its own flows).
    conn.bundle(vec![FlowMod::delete_by_cookie(0x1002, u64::MAX).into()])
        .await
        .unwrap();
    assert_eq!(sim.flow_count(), 150);
    assert!(sim.flows().iter().all(|f| f.cookie != 0x1002));

    // Loose match: every flow in table 0 whose ip_dst is inside 10.0.0.0/16 (the
    // flows have /24s; i < 256 all are).
    let wide = Match::new()
        .with(MatchField::u16(Field::EthType, 0x0800))
        .unwrap()
        .with(MatchField::ipv4_prefix(
            Field::Ipv4Dst,
            Ipv4Addr::new(10, 0, 0, 0),
            16,
        ))
        .unwrap();
    let in_t0 = sim.flows().iter().filter(|f| f.table_id == 0).count();
    assert!(in_t0 > 0);
    conn.bundle(vec![FlowMod::delete(0, wide.clone()).into()])
        .await
        .unwrap();
    assert_eq!(sim.flow_count(), 150 - in_t0);
    assert!(sim.flows().iter().all(|f| f.table_id != 0));

    // A narrower request than the flows (a /28) selects nothing: loose means the
    // request is implied by the flow, not the other way round.
    let narrow = Match::new()
        .with(MatchField::u16(Field::EthType, 0x0800))
        .unwrap()
        .with(MatchField::ipv4_prefix(
            Field::Ipv4Dst,
            Ipv4Addr::new(10, 0, 1, 0),
            28,
        ))
        .unwrap();
    let n = sim.flow_count();
    conn.bundle(vec![FlowMod::delete(port::TABLE_ALL, narrow).into()])
        .await
        .unwrap();
    assert_eq!(sim.flow_count(), n);

    // Delete by out_port.
    let mut by_port = FlowMod::delete(port::TABLE_ALL, Match::new());
    by_port.out_port = 2;
    let outputs_2 = sim
        .flows()
        .iter()
        .filter(|f| {
            f.instructions.iter().any(|i| {
                matches!(i, Instruction::ApplyActions(a)
                    if a.iter().any(|a| matches!(a, Action::Output { port: 2, .. })))
            })
        })
        .count();
    assert!(outputs_2 > 0);
    conn.bundle(vec![by_port.into()]).await.unwrap();
    assert_eq!(sim.flow_count(), n - outputs_2);

    // Loose modify in one table with a cookie filter.
    let mut modify = FlowMod::delete(10, Match::new());
    modify.command = FlowModCommand::Modify;
    modify.cookie = 0x1001;
    modify.cookie_mask = u64::MAX;
    modify.instructions = vec![Instruction::GotoTable(11)];
    conn.bundle(vec![modify.into()]).await.unwrap();
    let t10 = conn.dump_flows(FlowStatsRequest::table(10)).await.unwrap();
    assert!(!t10.is_empty());
    for f in &t10 {
        let rewritten = f.instructions == vec![Instruction::GotoTable(11)];
        assert_eq!(rewritten, f.cookie == 0x1001, "{f:?}");
    }

    // Add replaces a flow with the same table, priority and match.
    let mut again = flow(1);
    again.cookie = 0x9999;
    conn.bundle(vec![again.into()]).await.unwrap();
    let f1: Vec<FlowStats> = sim
        .flows()
        .into_iter()
        .filter(|f| f.match_ == flow(1).match_)
        .collect();
    assert_eq!(f1.len(), 1);
    assert_eq!(f1[0].cookie, 0x9999);

    // Delete everything.
    conn.bundle(vec![FlowMod::delete(port::TABLE_ALL, Match::new()).into()])
        .await
        .unwrap();
    assert_eq!(sim.flow_count(), 0);
    assert!(
        conn.dump_flows(FlowStatsRequest::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn what_it_does_not_model_is_an_error_not_a_hang() {
    let (_dir, sim, conn) = pair(0x55).await;
    // OFPT_PORT_MOD (16).
    let port_mod = Message::Unknown {
        msg_type: 16,
        body: bytes::Bytes::from_static(&[0; 32]),
    };
    match conn.request(&port_mod).await {
        Err(Error::Switch(e)) => assert_eq!(e.name(), Some("OFPBRC_BAD_TYPE")),
        other => panic!("{other:?}"),
    }
    // OFPMP_METER_CONFIG (10).
    let meter_config = MultipartRequest::new(MultipartRequestBody::Other {
        mp_type: 10,
        body: bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
    });
    match conn.multipart(meter_config).await {
        Err(Error::Switch(e)) => assert_eq!(e.name(), Some("OFPBRC_BAD_MULTIPART")),
        other => panic!("{other:?}"),
    }
    // What it does answer.
    assert!(conn.table_names().await.unwrap().is_empty());
    let desc = conn
        .multipart(MultipartRequest::new(MultipartRequestBody::Desc))
        .await
        .unwrap();
    assert_eq!(desc.len(), 1);
    let reply = conn.request(&Message::GetConfigRequest).await.unwrap();
    assert!(matches!(reply, Message::GetConfigReply(c) if c.miss_send_len == 128));
    let role = Role {
        role: openflow::message::switch::role::MASTER,
        generation_id: 5,
    };
    let reply = conn.request(&Message::RoleRequest(role)).await.unwrap();
    assert_eq!(reply, Message::RoleReply(role));
    let stale = Role {
        generation_id: 4,
        ..role
    };
    match conn.request(&Message::RoleRequest(stale)).await {
        Err(Error::Switch(e)) => assert_eq!(e.name(), Some("OFPRRFC_STALE")),
        other => panic!("{other:?}"),
    }
    // A bundle control for a bundle that does not exist.
    let commit = Message::BundleControl(openflow::BundleControl {
        bundle_id: 99,
        ctrl_type: openflow::BundleCtrlType::CommitRequest,
        flags: 3,
    });
    match conn.request(&commit).await {
        Err(Error::Switch(e)) => assert_eq!(e.name(), Some("OFPBFC_BAD_ID")),
        other => panic!("{other:?}"),
    }
    conn.barrier().await.unwrap();
    assert_eq!(sim.stats().errors_sent, 4);

    // Disconnecting closes the controller's side.
    sim.disconnect();
    assert!(matches!(sim.phase(), Phase::Closed(_)));
    let closed = tokio::time::timeout(LIMIT, async {
        while conn.closed_reason().is_none() {
            if conn.barrier().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the controller never saw the switch go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_switches_on_one_listener() {
    let (_dir, mut listener, target) = listener().await;
    const N: u64 = 200;
    let dials: Vec<_> = (1..=N)
        .map(|dpid| {
            let target = target.clone();
            tokio::spawn(async move { SimSwitch::connect(&target, 0x5100 + dpid).await })
        })
        .collect();
    let mut conns = Vec::new();
    for _ in 0..N {
        let c = tokio::time::timeout(LIMIT, listener.accept())
            .await
            .expect("accept timed out")
            .unwrap();
        conns.push(c);
    }
    let mut sims = Vec::new();
    for d in dials {
        sims.push(d.await.unwrap().unwrap());
    }
    for s in &sims {
        assert!(s.wait_ready(LIMIT).await, "{s:?}");
    }
    let got: HashSet<u64> = conns.iter().map(|c| c.datapath_id()).collect();
    let want: HashSet<u64> = (1..=N).map(|d| 0x5100 + d).collect();
    assert_eq!(got, want);

    // Every one takes a bundle.
    let jobs: Vec<_> = conns
        .iter()
        .cloned()
        .map(|c| {
            tokio::spawn(async move {
                let flows = (0..20).map(|i| flow(i).into()).collect();
                c.bundle(flows).await
            })
        })
        .collect();
    for j in jobs {
        j.await.unwrap().unwrap();
    }
    for s in &sims {
        assert!(s.wait_for_bundles(1, LIMIT).await);
        assert_eq!(s.flow_count(), 20);
    }
}

/// A peer that connects and never speaks must not hold up the switches behind it: each
/// accepted stream has its own handshake task. The silent peers connect first, so a
/// listener that ran handshakes inline would return their timeout errors (after the
/// request timeout) before the real switch.
#[tokio::test]
async fn a_silent_peer_does_not_block_the_next_switch() {
    let config = openflow::conn::Config {
        request_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    for tcp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut listener, target) = if tcp {
            let l = Listener::bind_with("ptcp:0:127.0.0.1", config.clone())
                .await
                .unwrap();
            let target = format!("tcp:{}", l.local_addr().unwrap());
            (l, target)
        } else {
            let path = dir.path().join("of.sock");
            let l = Listener::bind_with(&format!("punix:{}", path.display()), config.clone())
                .await
                .unwrap();
            (l, format!("unix:{}", path.display()))
        };
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(match target.split_once(':').unwrap() {
                ("tcp", a) => Box::new(tokio::net::TcpStream::connect(a).await.unwrap())
                    as Box<dyn std::any::Any>,
                (_, p) => Box::new(tokio::net::UnixStream::connect(p).await.unwrap()),
            });
        }
        let sim = SimSwitch::connect(&target, 0x5117).await.unwrap();
        let first = tokio::time::timeout(LIMIT, listener.accept())
            .await
            .expect("the real switch was held up behind the silent peers")
            .expect("the real switch's handshake");
        assert_eq!(first.datapath_id(), 0x5117, "over {target}");
        assert!(sim.wait_ready(LIMIT).await);
        drop(silent);
    }
}

#[tokio::test]
async fn bundle_control_errors_and_tcp() {
    // Over TCP this time.
    let mut listener = Listener::bind("ptcp:0:127.0.0.1").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = SimSwitch::connect(&format!("tcp:{addr}"), 0x77)
        .await
        .unwrap();
    let conn = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.datapath_id(), 0x77);
    let mut events = conn.take_events().unwrap();
    let control = |bundle_id, ctrl_type| {
        Message::BundleControl(openflow::BundleControl {
            bundle_id,
            ctrl_type,
            flags: 3,
        })
    };
    let bad = |r: openflow::Result<Message>| match r {
        Err(Error::Switch(e)) => e.name().unwrap_or("?"),
        other => panic!("expected an error, got {other:?}"),
    };
    use openflow::BundleCtrlType::*;
    let open = conn.request(&control(5, OpenRequest)).await.unwrap();
    assert_eq!(open, control(5, OpenReply));
    // Opening it again fails and (as in OVS) drops it.
    assert_eq!(
        bad(conn.request(&control(5, OpenRequest)).await),
        "OFPBFC_BAD_ID"
    );
    assert_eq!(
        bad(conn.request(&control(5, CommitRequest)).await),
        "OFPBFC_BAD_ID"
    );
    // A closed bundle takes no more messages.
    conn.request(&control(6, OpenRequest)).await.unwrap();
    let close = conn.request(&control(6, CloseRequest)).await.unwrap();
    assert_eq!(close, control(6, CloseReply));
    let add = |xid| {
        Message::BundleAdd(openflow::BundleAdd {
            bundle_id: 6,
            flags: 3,
            xid,
            message: Box::new(flow(1).into()),
        })
    };
    let sent = conn.send(&add(0)).unwrap();
    conn.barrier().await.unwrap();
    match events.try_recv().unwrap() {
        Message::Error(e) => {
            assert_eq!(e.name(), Some("OFPBFC_MSG_BAD_XID"));
            assert_eq!(e.offending_xid(), Some(sent));
        }
        other => panic!("{other:?}"),
    }
    // A correct add must carry its own xid: the connection hands out xids one by one
    // (its keepalive would only take one after 5 s of silence).
    let next = conn.send(&Message::BarrierRequest).unwrap() + 1;
    conn.send(&add(next)).unwrap();
    conn.barrier().await.unwrap();
    let mut names = Vec::new();
    while let Ok(m) = events.try_recv() {
        if let Message::Error(e) = m {
            names.push(e.name().unwrap_or("?"));
        }
    }
    assert_eq!(names, ["OFPBFC_BUNDLE_CLOSED"]);
    assert_eq!(sim.flow_count(), 0);
    // A committed empty bundle is still a bundle.
    conn.bundle(Vec::new()).await.unwrap();
    assert!(sim.wait_for_bundles(1, LIMIT).await);
}
