//! The `openflow` crate against a real ovs-vswitchd: flows we encode show up in
//! `ovs-ofctl dump-flows` as intended, flows ovs-ofctl installed decode into the expected
//! structures, bundles are all-or-nothing and name the failing message, and a listener
//! accepts vswitchd as a controller connection with a working handshake and keepalive.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use openflow::conn::{Config, Connection, Listener};
use openflow::message::multipart::OFPMPF_MORE;
use openflow::*;
use switchyard_tests::{OvsSandbox, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn sf(field: Field, ofs: u16, n_bits: u16) -> Subfield {
    Subfield { field, ofs, n_bits }
}

fn m(fields: Vec<MatchField>) -> Match {
    let mut m = Match::new();
    for f in fields {
        m.insert(f).expect("valid match field");
    }
    m.check_prerequisites().expect("prerequisites");
    m
}

fn apply(actions: Vec<Action>) -> Vec<Instruction> {
    vec![Instruction::ApplyActions(actions)]
}

/// The conntrack/NAT flow also captured as golden bytes in openflow/tests/golden.rs.
fn ct_flow() -> FlowMod {
    FlowMod {
        cookie: 0x1234,
        ..FlowMod::add(
            1,
            5,
            m(vec![
                MatchField::u16(Field::EthType, 0x0800),
                MatchField::ipv4_prefix(Field::Ipv4Src, Ipv4Addr::new(10, 0, 0, 0), 8),
                MatchField::u8(Field::IpProto, 6),
                MatchField::u16(Field::TcpDst, 80),
                MatchField::u16_masked(Field::TcpFlags, 0x002, 0x002),
                MatchField::ipv4(Field::TunDst, Ipv4Addr::new(1, 1, 1, 1)),
                MatchField::u32_masked(Field::Reg(3), 5, 0xff),
                MatchField::u32_masked(Field::CtState, 0x21, 0x21),
                MatchField::u32(Field::CtMark, 1),
                MatchField::int(Field::CtLabel, 2),
                MatchField::ipv4(Field::CtNwSrc, Ipv4Addr::new(1, 2, 3, 4)),
                MatchField::u64(Field::Metadata, 7),
            ]),
            vec![
                Instruction::ApplyActions(vec![
                    Action::Ct(Ct {
                        commit: true,
                        zone: CtZone::Value(5),
                        nat: Some(Nat {
                            kind: Some(NatKind::Src),
                            addr_min: Some(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))),
                            addr_max: Some(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 5))),
                            port_min: Some(100),
                            port_max: Some(200),
                            random: true,
                            ..Nat::default()
                        }),
                        actions: vec![Action::SetField(MatchField::u32(Field::CtMark, 1))],
                        ..Ct::default()
                    }),
                    Action::load(sf(Field::Reg(0), 0, 4), 1),
                    Action::SetField(MatchField::u32(Field::Reg(1), 1)),
                    Action::move_(
                        Subfield::whole(Field::Reg(0)),
                        Subfield::whole(Field::Reg(2)),
                    ),
                    Action::resubmit_table(7),
                ]),
                Instruction::GotoTable(5),
            ],
        )
    }
}

fn many_flows() -> Vec<(Message, &'static str)> {
    let mac = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
    vec![
        (
            ct_flow().into(),
            "cookie=0x1234, table=1, priority=5,ct_state=+new+trk,ct_mark=0x1,ct_label=0x2,ct_nw_src=1.2.3.4,tcp,reg3=0x5/0xff,tun_dst=1.1.1.1,metadata=0x7,nw_src=10.0.0.0/8,tp_dst=80,tcp_flags=+syn actions=ct(commit,zone=5,nat(src=1.1.1.1-1.1.1.5:100-200,random),exec(set_field:0x1->ct_mark)),load:0x1->NXM_NX_REG0[0..3],set_field:0x1->reg1,move:NXM_NX_REG0[]->NXM_NX_REG2[],resubmit(,7),goto_table:5",
        ),
        (
            FlowMod::add(
                2,
                10,
                m(vec![
                    MatchField::u16(Field::EthType, 0x0800),
                    MatchField::ipv4(Field::Ipv4Dst, Ipv4Addr::new(10, 1, 0, 5)),
                ]),
                apply(vec![Action::Conjunction {
                    id: 9,
                    clause: 2,
                    n_clauses: 3,
                }]),
            )
            .into(),
            "table=2, priority=10,ip,nw_dst=10.1.0.5 actions=conjunction(9,2/3)",
        ),
        (
            FlowMod::add(
                3,
                20,
                m(vec![
                    MatchField::u32(Field::InPort, 3),
                    MatchField::mac(Field::EthSrc, mac),
                    MatchField::u16(Field::EthType, 0x0806),
                    MatchField::u16(Field::ArpOp, 1),
                    MatchField::ipv4(Field::ArpTpa, Ipv4Addr::new(10, 0, 0, 1)),
                ]),
                apply(vec![
                    Action::Learn(Learn {
                        idle_timeout: 30,
                        priority: 7,
                        cookie: 0x99,
                        table_id: 10,
                        specs: vec![
                            LearnSpec::Match {
                                src: LearnSrc::Field(Subfield::whole(Field::EthSrc)),
                                dst: Subfield::whole(Field::EthDst),
                            },
                            LearnSpec::Load {
                                src: LearnSrc::Field(Subfield::whole(Field::InPort)),
                                dst: sf(Field::Reg(0), 0, 16),
                            },
                            LearnSpec::Output {
                                src: Subfield::whole(Field::InPort),
                            },
                        ],
                        ..Learn::default()
                    }),
                    Action::OutputReg {
                        src: sf(Field::Reg(1), 0, 16),
                        max_len: 0xffff,
                    },
                    Action::Controller2(Controller2 {
                        max_len: Some(128),
                        controller_id: Some(3),
                        userdata: Some(vec![1, 2, 3].into()),
                        pause: true,
                        ..Controller2::default()
                    }),
                    Action::PushVlan(0x8100),
                    Action::PopVlan,
                    Action::CtClear,
                    Action::output(4),
                    Action::output(port::CONTROLLER),
                ]),
            )
            .into(),
            "table=3, priority=20,arp,in_port=3,dl_src=00:11:22:33:44:55,arp_tpa=10.0.0.1,arp_op=1 actions=learn(table=10,idle_timeout=30,priority=7,cookie=0x99,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],output:NXM_OF_IN_PORT[]),output:NXM_NX_REG1[0..15],controller(max_len=128,id=3,userdata=01.02.03,pause),push_vlan:0x8100,pop_vlan,ct_clear,output:4,CONTROLLER:65535",
        ),
        (
            FlowMod::add(
                4,
                30,
                m(vec![
                    MatchField::u16(Field::EthType, 0x86dd),
                    MatchField::ipv6_prefix(Field::Ipv6Src, "fe80::".parse().unwrap(), 64),
                    MatchField::u8(Field::IpProto, 58),
                    MatchField::u8(Field::Icmpv6Type, 135),
                    MatchField::ipv6(Field::NdTarget, "fe80::1".parse().unwrap()),
                ]),
                apply(vec![
                    Action::DecTtl,
                    Action::SetNwTtl(9),
                    Action::SetField(MatchField::ipv6(Field::Ipv6Dst, "fe80::2".parse().unwrap())),
                    Action::Ct(Ct {
                        zone: CtZone::Field(sf(Field::Reg(4), 0, 16)),
                        table: Some(6),
                        nat: Some(Nat::default()),
                        ..Ct::default()
                    }),
                    // A partial write goes out as NXAST_REG_LOAD2.
                    Action::SetField(MatchField::u32_masked(Field::Reg(2), 0x10, 0xf0)),
                    Action::Group(5),
                ]),
            )
            .into(),
            "table=4, priority=30,icmp6,ipv6_src=fe80::/64,icmp_type=135,nd_target=fe80::1 actions=dec_ttl,mod_nw_ttl:9,set_field:fe80::2->ipv6_dst,ct(table=6,zone=NXM_NX_REG4[0..15],nat),set_field:0x10/0xf0->reg2,group:5",
        ),
        (
            FlowMod::add(
                5,
                40,
                m(vec![
                    MatchField::u16(Field::EthType, 0x0800),
                    MatchField::u16(Field::VlanVid, 0x1005),
                    MatchField::u8(Field::IpProto, 17),
                    MatchField::u16(Field::UdpSrc, 53),
                    MatchField::u64(Field::TunnelId, 0x55),
                    MatchField::u32_masked(Field::PktMark, 7, 0xf),
                    MatchField::u16(Field::CtZone, 3),
                    MatchField::u32(Field::Reg(15), 1),
                ]),
                vec![
                    Instruction::WriteActions(vec![Action::output(3)]),
                    Instruction::WriteMetadata {
                        value: 5,
                        mask: 0xff,
                    },
                ],
            )
            .into(),
            "table=5, priority=40,pkt_mark=0x7/0xf,ct_zone=3,udp,reg15=0x1,tun_id=0x55,dl_vlan=5,tp_src=53 actions=write_actions(output:3),write_metadata:0x5/0xff",
        ),
        (
            FlowMod::add(
                6,
                9,
                m(vec![MatchField::u32(Field::ConjId, 9)]),
                apply(vec![
                    Action::resubmit_table(7),
                    Action::output(port::NORMAL),
                ]),
            )
            .into(),
            "table=6, priority=9,conj_id=9 actions=resubmit(,7),NORMAL",
        ),
    ]
}

fn dump(ovs: &OvsSandbox) -> String {
    ovs.ofctl("dump-flows", "br0", &["--no-stats"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_encoded_by_us_show_in_ovs_ofctl() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let conn = Connection::connect(&target).await.expect("connect");
    // The group must exist before a flow can reference it.
    conn.apply(&[GroupMod::add(
        5,
        GroupType::Select,
        vec![Bucket::weighted(1, vec![Action::output(1)])],
    )
    .into()])
        .await
        .expect("group add");
    let flows = many_flows();
    let msgs: Vec<Message> = flows.iter().map(|(m, _)| m.clone()).collect();
    conn.apply(&msgs).await.expect("flows accepted");
    let dumped = dump(&ovs);
    for (_, expected) in &flows {
        assert!(
            dumped.contains(expected),
            "ovs-ofctl dump-flows lacks\n  {expected}\nin\n{dumped}"
        );
    }
    // And our decoder reads back what we installed.
    let back = conn
        .dump_flows(FlowStatsRequest::default().with_cookie(0x1234, u64::MAX))
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    let want = ct_flow();
    assert_eq!(back[0].match_, want.match_);
    assert_eq!(back[0].instructions, want.instructions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_flows_decodes_flows_ovs_ofctl_installed() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    ovs.ofctl(
        "add-flow",
        "br0",
        &["cookie=0x77,table=9,priority=33,tcp,nw_dst=10.96.0.10,tp_dst=443,actions=ct(commit,table=10,zone=7,nat(dst=10.1.0.4:8443)),load:0x2a->NXM_NX_REG1[],output:NXM_NX_REG1[0..15]"],
    );
    ovs.ofctl(
        "add-flow",
        "br0",
        &["cookie=0x78,table=9,priority=10,ct_state=+est+trk,ip,actions=conjunction(3,1/2)"],
    );
    ovs.ofctl(
        "add-group",
        "br0",
        &["group_id=7,type=select,bucket=weight=10,actions=output:1,bucket=weight=20,actions=set_field:10.0.0.9->ip_dst,output:2"],
    );
    let conn = Connection::connect(&target).await.expect("connect");
    let flows = conn
        .dump_flows(FlowStatsRequest::table(9))
        .await
        .expect("dump");
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let f = flows
        .iter()
        .find(|f| f.cookie == 0x77)
        .expect("cookie 0x77");
    assert_eq!((f.table_id, f.priority), (9, 33));
    assert_eq!(
        f.match_,
        m(vec![
            MatchField::u16(Field::EthType, 0x0800),
            MatchField::ipv4(Field::Ipv4Dst, Ipv4Addr::new(10, 96, 0, 10)),
            MatchField::u8(Field::IpProto, 6),
            MatchField::u16(Field::TcpDst, 443),
        ])
    );
    assert_eq!(
        f.instructions,
        apply(vec![
            Action::Ct(Ct {
                commit: true,
                zone: CtZone::Value(7),
                table: Some(10),
                nat: Some(Nat {
                    kind: Some(NatKind::Dst),
                    addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 4))),
                    port_min: Some(8443),
                    ..Nat::default()
                }),
                ..Ct::default()
            }),
            Action::load(Subfield::whole(Field::Reg(1)), 0x2a),
            Action::OutputReg {
                src: sf(Field::Reg(1), 0, 16),
                max_len: 0xffff,
            },
        ])
    );
    let g = flows
        .iter()
        .find(|f| f.cookie == 0x78)
        .expect("cookie 0x78");
    assert_eq!(
        g.instructions,
        apply(vec![Action::Conjunction {
            id: 3,
            clause: 1,
            n_clauses: 2
        }])
    );
    // The cookie filter is applied by the switch.
    let only = conn
        .dump_flows(FlowStatsRequest::default().with_cookie(0x78, u64::MAX))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].cookie, 0x78);

    let groups = conn.dump_groups().await.expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group_id, 7);
    assert_eq!(groups[0].group_type, GroupType::Select);
    assert_eq!(
        groups[0]
            .buckets
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(
        groups[0].buckets[1].actions,
        vec![
            Action::SetField(MatchField::ipv4(Field::Ipv4Dst, Ipv4Addr::new(10, 0, 0, 9))),
            Action::output(2),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_dumps_arrive_in_several_parts_and_are_reassembled() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let conn = Connection::connect(&target).await.expect("connect");
    let msgs: Vec<Message> = (0..3000u32)
        .map(|i| {
            FlowMod::add(
                20,
                100,
                m(vec![
                    MatchField::u16(Field::EthType, 0x0800),
                    MatchField::ipv4(Field::Ipv4Dst, Ipv4Addr::from(0x0a00_0000 + i)),
                ]),
                apply(vec![Action::output(1)]),
            )
            .with_cookie(0x5000 + u64::from(i))
            .into()
        })
        .collect();
    conn.bundle(msgs).await.expect("bundle of 3000 flows");
    let parts = conn
        .multipart(MultipartRequest::new(MultipartRequestBody::Flow(
            FlowStatsRequest {
                table_id: 20,
                ..FlowStatsRequest::default()
            },
        )))
        .await
        .unwrap();
    assert!(parts.len() > 1, "3000 flows fit in one reply part?");
    let MultipartReplyBody::Flow(all) = MultipartReplyBody::concat(parts).unwrap() else {
        panic!("not flow stats")
    };
    assert_eq!(all.len(), 3000);
    assert_eq!(
        conn.dump_flows(FlowStatsRequest::table(20))
            .await
            .unwrap()
            .len(),
        3000
    );
    let _ = OFPMPF_MORE;
    let count = dump(&ovs)
        .lines()
        .filter(|l| l.contains("table=20"))
        .count();
    assert_eq!(count, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_with_a_bad_flow_changes_nothing_and_names_it() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let conn = Connection::connect(&target).await.expect("connect");
    let good = |table: u8, prio: u16| -> Message {
        FlowMod::add(
            table,
            prio,
            m(vec![MatchField::u16(Field::EthType, 0x0800)]),
            apply(vec![Action::output(1)]),
        )
        .with_cookie(0xb0)
        .into()
    };
    // goto_table must go forward: table 5 -> 2 is rejected by the switch.
    let bad: Message = FlowMod::add(5, 1, Match::new(), vec![Instruction::GotoTable(2)]).into();
    let before = dump(&ovs);
    let err = conn
        .bundle(vec![good(1, 1), good(2, 2), bad, good(3, 3)])
        .await
        .expect_err("bundle with goto_table backwards");
    match &err {
        Error::BundleFailed {
            index: Some(2),
            error,
        } => assert_eq!(error.name(), Some("OFPBIC_BAD_TABLE_ID"), "{error}"),
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("message 2"), "{err}");
    assert!(err.to_string().contains("OFPBIC_BAD_TABLE_ID"), "{err}");
    assert_eq!(dump(&ovs), before, "a failed bundle changed the flow table");

    // An output to a port number OVS rejects, detected only at commit time in table 7.
    let bad_port: Message =
        FlowMod::add(7, 1, Match::new(), apply(vec![Action::output(0xffff_ff01)])).into();
    let err = conn
        .bundle(vec![good(1, 1), bad_port])
        .await
        .expect_err("bundle with an invalid port");
    assert!(
        matches!(err, Error::BundleFailed { index: Some(1), .. }),
        "{err}"
    );
    assert_eq!(dump(&ovs), before);

    conn.bundle(vec![good(1, 1), good(2, 2), good(3, 3)])
        .await
        .expect("good bundle");
    let after = dump(&ovs);
    for t in [
        "table=1, priority=1,ip",
        "table=2, priority=2,ip",
        "table=3, priority=3,ip",
    ] {
        assert!(after.contains(t), "{t} missing after commit:\n{after}");
    }
    // Deleting by cookie through a plain flow-mod.
    conn.apply(&[FlowMod::delete_by_cookie(0xb0, u64::MAX).into()])
        .await
        .unwrap();
    assert_eq!(dump(&ovs), before);
}

fn datapath_id_of(ovs: &OvsSandbox, bridge: &str) -> u64 {
    let s = ovs.vsctl(&["get", "bridge", bridge, "datapath_id"]);
    u64::from_str_radix(s.trim().trim_matches('"'), 16).expect("datapath_id hex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_accepts_vswitchd_as_controller_connection() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let sock = ovs.dir().join("controller.sock");
    let config = Config {
        echo_interval: Duration::from_millis(500),
        ..Config::default()
    };
    let mut listener = Listener::bind_with(&format!("punix:{}", sock.display()), config)
        .await
        .expect("bind");
    let ctl = format!("unix:{}", sock.display());
    ovs.vsctl(&["set-controller", "br0", &ctl]);
    let conn = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("vswitchd connects within 30 s")
        .expect("handshake");
    assert_eq!(conn.datapath_id(), datapath_id_of(&ovs, "br0"));
    let mut events = conn.take_events().expect("events");
    // Our keepalive runs on this connection too. (vswitchd itself never probes a
    // controller on a unix socket: OVS marks unix streams as not needing probes.)
    let c = conn.clone();
    tokio::task::spawn_blocking(move || wait_for(TIMEOUT, || c.stats().echo_replies_received >= 2))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no echo replies: {:?}", conn.stats()));
    assert_eq!(conn.closed_reason(), None);
    // vswitchd publishes the controller's status to OVSDB on its own schedule.
    wait_for(TIMEOUT, || {
        ovs.vsctl(&["get", "controller", "br0", "is_connected"])
            .trim()
            == "true"
    })
    .unwrap_or_else(|| {
        panic!(
            "OVSDB never showed the controller connected: {} / {:?} / {:?}\n{}",
            ovs.vsctl(&["list", "controller"]),
            conn.closed_reason(),
            conn.stats(),
            ovs.log_tail("ovs-vswitchd")
        )
    });

    // PACKET_IN: a packet we inject hits a flow that sends it to the controller.
    conn.apply(&[FlowMod::add(
        0,
        100,
        m(vec![
            MatchField::u16(Field::EthType, 0x0800),
            MatchField::u8(Field::IpProto, 17),
        ]),
        apply(vec![Action::output(port::CONTROLLER)]),
    )
    .with_cookie(0xc0)
    .into()])
        .await
        .unwrap();
    let frame = udp_frame();
    conn.send(&PacketOut::new(frame.clone(), vec![Action::output(port::TABLE)]).into())
        .unwrap();
    let ev = tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                // In fail-open mode the bridge also sends its own table misses.
                Some(Message::PacketIn(p)) if p.cookie == 0xc0 => break p,
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("PACKET_IN within 30 s");
    assert_eq!(ev.cookie, 0xc0);
    assert_eq!(ev.table_id, 0);
    assert_eq!(&ev.data[..], &frame[..]);
    assert_eq!(
        ev.match_.get(Field::InPort),
        Some(&MatchField::u32(Field::InPort, port::CONTROLLER))
    );

    // FLOW_REMOVED for a flow installed with send_flow_rem, deleted by cookie.
    conn.apply(&[FlowMod {
        flags: openflow::message::flow_mod::flags::SEND_FLOW_REM,
        ..FlowMod::add(
            8,
            77,
            m(vec![MatchField::u16(Field::EthType, 0x0806)]),
            apply(vec![Action::output(port::NORMAL)]),
        )
        .with_cookie(0xdead)
    }
    .into()])
        .await
        .unwrap();
    conn.apply(&[FlowMod::delete_by_cookie(0xdead, u64::MAX).into()])
        .await
        .unwrap();
    let removed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                Some(Message::FlowRemoved(r)) => break r,
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("FLOW_REMOVED within 30 s");
    assert_eq!(removed.cookie, 0xdead);
    assert_eq!((removed.table_id, removed.priority), (8, 77));
    assert_eq!(removed.reason, 2, "OFPRR_DELETE");
    assert_eq!(
        removed.match_,
        m(vec![MatchField::u16(Field::EthType, 0x0806)])
    );

    // NXT_PACKET_IN2: controller2 userdata reaches us once we ask for that format.
    conn.send(&Message::SetPacketInFormat(
        openflow::message::packet_in2::format::NXT_PACKET_IN2,
    ))
    .unwrap();
    let mut m54 = Match::new();
    for f in [
        MatchField::u16(Field::EthType, 0x0800),
        MatchField::u8(Field::IpProto, 17),
        MatchField::u16(Field::UdpDst, 54),
    ] {
        m54.insert(f).unwrap();
    }
    conn.apply(&[FlowMod::add(
        0,
        200,
        m54,
        apply(vec![
            Action::load(Subfield::whole(Field::Reg(5)), 0x77),
            Action::Controller2(Controller2 {
                userdata: Some(vec![0x0a, 0x0b].into()),
                ..Controller2::default()
            }),
        ]),
    )
    .with_cookie(0xc1)
    .into()])
        .await
        .unwrap();
    let mut frame54 = udp_frame();
    frame54[37] = 54;
    conn.send(&PacketOut::new(frame54.clone(), vec![Action::output(port::TABLE)]).into())
        .unwrap();
    let pi2 = tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                Some(Message::PacketIn2(p)) if p.cookie == Some(0xc1) => break p,
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("NXT_PACKET_IN2 within 30 s");
    assert_eq!(&pi2.packet[..], &frame54[..]);
    assert_eq!(pi2.userdata.as_deref(), Some(&[0x0a, 0x0b][..]));
    assert_eq!(pi2.table_id, Some(0));
    assert_eq!(
        pi2.metadata.get(Field::Reg(5)),
        Some(&MatchField::u32(Field::Reg(5), 0x77))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_keepalive_echoes_are_answered() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let conn = Connection::connect_with(
        &target,
        Config {
            echo_interval: Duration::from_millis(200),
            ..Config::default()
        },
    )
    .await
    .expect("connect");
    let c = conn.clone();
    tokio::task::spawn_blocking(move || wait_for(TIMEOUT, || c.stats().echo_replies_received >= 2))
        .await
        .unwrap()
        .expect("echo replies from vswitchd");
    assert!(conn.stats().echo_requests_sent >= 2);
    assert_eq!(conn.closed_reason(), None);
    conn.barrier().await.expect("still usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_the_request_that_caused_them() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let conn = Connection::connect(&target).await.expect("connect");
    let g = || -> Message {
        GroupMod::add(
            9,
            GroupType::All,
            vec![Bucket::new(vec![Action::output(1)])],
        )
        .into()
    };
    conn.apply(&[g()]).await.unwrap();
    let err = conn.apply(&[g()]).await.expect_err("duplicate group");
    match err {
        Error::BundleFailed {
            index: Some(0),
            error,
        } => {
            assert_eq!(error.name(), Some("OFPGMFC_GROUP_EXISTS"));
            assert_eq!(error.offending_type(), Some(15));
        }
        other => panic!("wrong error {other}"),
    }
    // A request whose reply is an error fails with Error::Switch.
    let err = conn
        .request(&Message::RoleRequest(Role {
            role: 99,
            generation_id: 0,
        }))
        .await
        .expect_err("bad role");
    assert!(matches!(err, Error::Switch(_)), "{err}");
    // The connection still works afterwards.
    let desc = conn
        .multipart(MultipartRequest::new(MultipartRequestBody::Desc))
        .await
        .unwrap();
    let MultipartReplyBody::Desc(d) = &desc[0] else {
        panic!("not desc")
    };
    assert_eq!(d.hw_desc, "Open vSwitch");
}

/// An Ethernet/IPv4/UDP frame (checksums are not checked on this path).
fn udp_frame() -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 2, // dst
        0x02, 0, 0, 0, 0, 1, // src
        0x08, 0x00, // IPv4
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, // ver/ihl .. proto, csum
        10, 0, 0, 1, 10, 0, 0, 2, // src, dst
        0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, // udp 12345 -> 53
    ];
    f.extend_from_slice(b"ping");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_and_statistics_match_what_ovs_reports() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    ovs.ofctl("add-flow", "br0", &["table=0,priority=5,ip,actions=drop"]);
    ovs.ofctl("add-flow", "br0", &["table=3,priority=5,arp,actions=drop"]);
    let conn = Connection::connect(&target).await.expect("connect");

    let one = |parts: Vec<MultipartReplyBody>| MultipartReplyBody::concat(parts).unwrap();
    let req = |b| MultipartRequest::new(b);

    // dump-aggregate says flow_count=3 (the two flows and the default NORMAL flow).
    let text = ovs.ofctl("dump-aggregate", "br0", &[]);
    assert!(text.contains("flow_count=3"), "{text}");
    let agg = one(conn
        .multipart(req(MultipartRequestBody::Aggregate(
            FlowStatsRequest::default(),
        )))
        .await
        .unwrap());
    assert!(
        matches!(agg, MultipartReplyBody::Aggregate(a) if a.flow_count == 3),
        "{agg:?}"
    );

    let MultipartReplyBody::Table(tables) = one(conn
        .multipart(req(MultipartRequestBody::Table))
        .await
        .unwrap())
    else {
        panic!("not table stats")
    };
    assert_eq!(tables[0].active_count, 2);
    assert_eq!(tables[3].active_count, 1);
    assert_eq!(tables.len(), usize::from(conn.features().n_tables));

    let MultipartReplyBody::PortDesc(ports) = one(conn
        .multipart(req(MultipartRequestBody::PortDesc))
        .await
        .unwrap())
    else {
        panic!("not port desc")
    };
    let local = ports
        .iter()
        .find(|p| p.port_no == port::LOCAL)
        .expect("LOCAL");
    assert_eq!(local.name, "br0");
    let mac = ovs.vsctl(&["get", "interface", "br0", "mac_in_use"]);
    let mac = mac.trim().trim_matches('"');
    let ours = local
        .hw_addr
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(ours, mac);

    let MultipartReplyBody::PortStats(stats) = one(conn
        .multipart(req(MultipartRequestBody::PortStats(port::ANY)))
        .await
        .unwrap())
    else {
        panic!("not port stats")
    };
    assert!(stats.iter().any(|s| s.port_no == port::LOCAL));

    // A meter, and a flow that uses it on its way to the controller.
    conn.apply(&[
        MeterMod::drop_above_pps(1, 100, 10).into(),
        FlowMod::add(
            9,
            1,
            Match::new(),
            vec![
                Instruction::Meter(1),
                Instruction::ApplyActions(vec![Action::output(port::CONTROLLER)]),
            ],
        )
        .into(),
    ])
    .await
    .unwrap();
    let meters = ovs.ofctl("dump-meters", "br0", &[]);
    assert!(
        meters.contains("meter=1 pktps burst stats bands=\ntype=drop rate=100 burst_size=10"),
        "{meters}"
    );
    let flows = dump(&ovs);
    assert!(
        flows.contains("table=9, priority=1 actions=meter:1,CONTROLLER:65535"),
        "{flows}"
    );

    // Role: OVS starts every connection as EQUAL.
    let reply = conn
        .request(&Message::RoleRequest(Role {
            role: openflow::message::switch::role::NOCHANGE,
            generation_id: 0,
        }))
        .await
        .unwrap();
    assert!(
        matches!(reply, Message::RoleReply(r) if r.role == openflow::message::switch::role::EQUAL),
        "{reply:?}"
    );

    // SET_CONFIG then GET_CONFIG reads it back.
    conn.send(&Message::SetConfig(SwitchConfig {
        flags: 0,
        miss_send_len: 200,
    }))
    .unwrap();
    let reply = conn.request(&Message::GetConfigRequest).await.unwrap();
    assert_eq!(
        reply,
        Message::GetConfigReply(SwitchConfig {
            flags: 0,
            miss_send_len: 200
        })
    );
}

/// The fence two controllers rely on (issue: two controllers, one leader): a connection
/// that asks to be master with a higher generation id demotes the other master to slave,
/// whose writes vswitchd then refuses (OFPBRC_IS_SLAVE); the demoted one asking to be
/// master again with its old generation id is refused as stale (OFPRRFC_STALE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_a_newer_generation_fences_the_old_one() {
    use openflow::message::switch::role;
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    let old = Connection::connect(&target).await.expect("connect old");
    let new = Connection::connect(&target).await.expect("connect new");
    let ask = |conn: &Connection, role: u32, generation_id: u64| {
        let conn = conn.clone();
        async move {
            conn.request(&Message::RoleRequest(Role {
                role,
                generation_id,
            }))
            .await
        }
    };
    let flow = |priority: u16| -> Message {
        FlowMod::add(0, priority, m(vec![]), apply(vec![Action::output(1)])).into()
    };
    let reply = ask(&old, role::MASTER, 5)
        .await
        .expect("old becomes master");
    assert!(
        matches!(reply, Message::RoleReply(r) if r.role == role::MASTER && r.generation_id == 5),
        "{reply:?}"
    );
    old.apply(&[flow(101)]).await.expect("the master writes");

    let reply = ask(&new, role::MASTER, 6)
        .await
        .expect("new becomes master");
    assert!(
        matches!(reply, Message::RoleReply(r) if r.role == role::MASTER && r.generation_id == 6),
        "{reply:?}"
    );
    let refused = old
        .apply(&[flow(102)])
        .await
        .expect_err("a slave cannot write");
    assert!(
        refused.to_string().contains("OFPBRC_IS_SLAVE"),
        "the old master's write is refused as a slave's: {refused}"
    );
    let stale = ask(&old, role::MASTER, 5)
        .await
        .expect_err("stale generation");
    assert!(
        matches!(&stale, Error::Switch(e) if e.name() == Some("OFPRRFC_STALE")),
        "{stale}"
    );
    new.apply(&[flow(103)])
        .await
        .expect("the new master writes");
    let flows = ovs.ofctl("dump-flows", "br0", &["--no-stats"]);
    assert!(
        flows.contains("priority=101") && flows.contains("priority=103"),
        "{flows}"
    );
    assert!(
        !flows.contains("priority=102"),
        "the fenced write got in:\n{flows}"
    );
}
