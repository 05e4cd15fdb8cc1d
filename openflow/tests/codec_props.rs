//! Property tests: decode(encode(x)) == x for match fields, actions and messages; and
//! malformed input (truncated, lying lengths, random bytes) yields errors, never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use openflow::*;
use proptest::prelude::*;

fn named_field() -> impl Strategy<Value = Field> {
    let all = Field::all();
    (0..all.len()).prop_map(move |i| all[i])
}

fn other_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        // NXM_1 numbers OVS has not assigned yet.
        (126u8..128).prop_map(|f| Field::Other(OxmHeader {
            class: 1,
            field: f,
            experimenter: None
        })),
        (0u8..128).prop_map(|f| Field::Other(OxmHeader {
            class: 0xffff,
            field: f,
            experimenter: Some(0x1234_5678)
        })),
    ]
}

fn match_field() -> impl Strategy<Value = MatchField> {
    (
        prop_oneof![4 => named_field(), 1 => other_field()],
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 16),
        prop::collection::vec(any::<u8>(), 16),
        any::<bool>(),
    )
        .prop_filter_map("all-zero mask", |(field, vlen, v, m, masked)| {
            let len = if field.is_variable_width() {
                1 + usize::from(vlen) % 16
            } else {
                field.width()
            };
            let mask = (masked && field.is_maskable()).then(|| Bytes::from(m[..len].to_vec()));
            MatchField {
                field,
                value: Bytes::from(v[..len].to_vec()),
                mask,
            }
            .normalized()
            .ok()
            .flatten()
        })
}

fn a_match() -> impl Strategy<Value = Match> {
    prop::collection::vec(match_field(), 0..8).prop_map(|v| {
        let mut m = Match::new();
        for mf in v {
            m.insert(mf).expect("normalized field");
        }
        m
    })
}

/// A field usable in Nicira actions (non-experimenter NXM header, fixed width).
fn nx_field() -> impl Strategy<Value = Field> {
    named_field().prop_filter("nx-addressable", |f| {
        !f.is_variable_width() && f.nxm_header().experimenter.is_none()
    })
}

fn subfield(max_bits: usize) -> impl Strategy<Value = Subfield> {
    (nx_field(), any::<u16>(), any::<u16>()).prop_map(move |(field, a, b)| {
        let bits = field.nxm_bits().min(max_bits);
        let n_bits = 1 + (a as usize % bits);
        let ofs = b as usize % (field.nxm_bits() - n_bits + 1);
        Subfield {
            field,
            ofs: ofs as u16,
            n_bits: n_bits as u16,
        }
    })
}

fn port16() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..0xff00, 0xffff_ff00u32..=0xffff_ffff]
}

fn nat() -> impl Strategy<Value = Nat> {
    (
        prop::option::of(prop_oneof![Just(NatKind::Src), Just(NatKind::Dst)]),
        prop::option::of((
            any::<bool>(),
            any::<u128>(),
            prop::option::of(any::<u128>()),
        )),
        prop::option::of((any::<u16>(), prop::option::of(any::<u16>()))),
        any::<[bool; 3]>(),
    )
        .prop_map(|(kind, addrs, ports, [persistent, hash, random])| {
            let (addr_min, addr_max) = match addrs {
                None => (None, None),
                Some((true, a, b)) => (
                    Some(IpAddr::V4(Ipv4Addr::from(a as u32))),
                    b.map(|b| IpAddr::V4(Ipv4Addr::from(b as u32))),
                ),
                Some((false, a, b)) => (
                    Some(IpAddr::V6(Ipv6Addr::from(a))),
                    b.map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                ),
            };
            let (port_min, port_max) = match ports {
                None => (None, None),
                Some((a, b)) => (Some(a), b),
            };
            Nat {
                kind,
                addr_min,
                addr_max,
                port_min,
                port_max,
                persistent,
                hash,
                random,
            }
        })
}

fn learn_spec() -> impl Strategy<Value = LearnSpec> {
    prop_oneof![
        (subfield(128), any::<bool>(), any::<u128>(), any::<bool>()).prop_flat_map(
            |(dst, from_field, v, load)| {
                let src_strat = if from_field {
                    subfield(128)
                        .prop_filter("same width", move |s| s.n_bits == dst.n_bits)
                        .prop_map(LearnSrc::Field)
                        .boxed()
                } else {
                    let n = dst.n_bits;
                    let mask = if n >= 128 {
                        u128::MAX
                    } else {
                        (1u128 << n) - 1
                    };
                    Just(LearnSrc::value(v & mask, n)).boxed()
                };
                src_strat.prop_map(move |src| {
                    if load {
                        LearnSpec::Load { src, dst }
                    } else {
                        LearnSpec::Match { src, dst }
                    }
                })
            }
        ),
        subfield(128).prop_map(|src| LearnSpec::Output { src }),
    ]
}

fn simple_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Action::Output { port, max_len }),
        any::<u32>().prop_map(Action::Group),
        match_field()
            .prop_filter("named", |mf| !matches!(mf.field, Field::Other(_)))
            .prop_map(Action::SetField),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        Just(Action::DecTtl),
        any::<u8>().prop_map(Action::SetNwTtl),
        any::<u32>().prop_map(Action::SetQueue),
        (
            0usize..HashFields::ALL.len(),
            any::<u16>(),
            0usize..MultipathAlgorithm::ALL.len(),
            1u32..=65536,
            any::<u32>(),
            subfield(64)
        )
            .prop_map(
                |(f, basis, a, n_links, arg, dst)| Action::Multipath(Multipath {
                    fields: HashFields::ALL[f].0,
                    basis,
                    algorithm: MultipathAlgorithm::ALL[a].0,
                    n_links,
                    arg,
                    dst,
                })
            ),
        (port16(), prop::option::of(0u8..255), any::<bool>())
            .prop_map(|(in_port, table, ct)| Action::Resubmit { in_port, table, ct }),
        Just(Action::CtClear),
        (any::<u32>(), 2u8..=64, any::<u8>()).prop_map(|(id, n, c)| Action::Conjunction {
            id,
            clause: 1 + c % n,
            n_clauses: n
        }),
        prop::collection::vec(any::<u8>(), 0..3)
            .prop_map(|v| Action::Note(Bytes::from(vec![7u8; 6 + 8 * v.len()]))),
        subfield(128).prop_flat_map(|src| {
            subfield(128)
                .prop_filter("same width", move |d| d.n_bits == src.n_bits)
                .prop_map(move |dst| Action::RegMove { src, dst })
        }),
        (subfield(64), any::<u64>()).prop_map(|(dst, v)| Action::RegLoad {
            dst,
            value: if dst.n_bits >= 64 {
                v
            } else {
                v & ((1 << dst.n_bits) - 1)
            }
        }),
        (subfield(64), any::<u16>()).prop_map(|(src, max_len)| Action::OutputReg { src, max_len }),
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(max_len, controller_id, reason)| {
            Action::Controller {
                max_len,
                controller_id,
                reason,
            }
        }),
        (
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u8>()),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
            any::<bool>(),
            prop::option::of(any::<u32>())
        )
            .prop_map(
                |(max_len, controller_id, reason, userdata, pause, meter_id)| {
                    Action::Controller2(Controller2 {
                        max_len,
                        controller_id,
                        reason,
                        userdata: userdata.map(Bytes::from),
                        pause,
                        meter_id,
                    })
                }
            ),
        (
            any::<u32>().prop_filter("not NX", |e| *e != field::NX_EXPERIMENTER),
            0usize..3
        )
            .prop_map(|(experimenter, n)| Action::Experimenter {
                experimenter,
                data: Bytes::from(vec![0xab; 8 * n])
            }),
        (11u16..16, 0usize..3).prop_map(|(t, n)| Action::Unknown {
            action_type: t,
            data: Bytes::from(vec![0xcd; 4 + 8 * n])
        }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => simple_action(),
        1 => (
            any::<[bool; 2]>(),
            prop_oneof![
                any::<u16>().prop_map(CtZone::Value),
                subfield(64)
                    .prop_filter("fits ofs_nbits", |s| s.ofs <= 0x3ff)
                    .prop_map(CtZone::Field)
            ],
            prop::option::of(0u8..255),
            any::<u16>(),
            prop::option::of(nat()),
            prop::collection::vec(
                match_field()
                    .prop_filter("named", |mf| !matches!(mf.field, Field::Other(_)))
                    .prop_map(Action::SetField),
                0..3
            )
        )
            .prop_map(|([commit, force], zone, table, alg, nat, actions)| {
                Action::Ct(Ct {
                    commit,
                    force,
                    zone,
                    table,
                    alg,
                    nat,
                    actions,
                })
            }),
        1 => (
            any::<[u16; 5]>(),
            any::<u64>(),
            any::<u8>(),
            any::<u16>(),
            prop::collection::vec(learn_spec(), 0..5)
        )
            .prop_map(|(t, cookie, table_id, flags, specs)| {
                Action::Learn(Learn {
                    idle_timeout: t[0],
                    hard_timeout: t[1],
                    priority: t[2],
                    cookie,
                    flags,
                    table_id,
                    fin_idle_timeout: t[3],
                    fin_hard_timeout: t[4],
                    specs,
                })
            }),
    ]
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        prop::collection::vec(action(), 0..5).prop_map(Instruction::ApplyActions),
        prop::collection::vec(action(), 0..3).prop_map(Instruction::WriteActions),
        Just(Instruction::ClearActions),
        any::<u8>().prop_map(Instruction::GotoTable),
        (any::<u64>(), any::<u64>())
            .prop_map(|(value, mask)| Instruction::WriteMetadata { value, mask }),
        any::<u32>().prop_map(Instruction::Meter),
    ]
}

fn flow_mod() -> impl Strategy<Value = FlowMod> {
    (
        any::<[u64; 2]>(),
        any::<u8>(),
        0usize..5,
        any::<[u16; 4]>(),
        any::<[u32; 3]>(),
        a_match(),
        prop::collection::vec(instruction(), 0..4),
    )
        .prop_map(|(c, table_id, cmd, t, p, match_, instructions)| FlowMod {
            cookie: c[0],
            cookie_mask: c[1],
            table_id,
            command: [
                FlowModCommand::Add,
                FlowModCommand::Modify,
                FlowModCommand::ModifyStrict,
                FlowModCommand::Delete,
                FlowModCommand::DeleteStrict,
            ][cmd],
            idle_timeout: t[0],
            hard_timeout: t[1],
            priority: t[2],
            flags: t[3],
            buffer_id: p[0],
            out_port: p[1],
            out_group: p[2],
            match_,
            instructions,
        })
}

fn group_mod() -> impl Strategy<Value = GroupMod> {
    (
        0usize..3,
        0usize..4,
        any::<u32>(),
        prop::collection::vec(
            (
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(simple_action(), 0..3),
            ),
            0..4,
        ),
    )
        .prop_map(|(c, t, group_id, b)| GroupMod {
            command: [
                GroupModCommand::Add,
                GroupModCommand::Modify,
                GroupModCommand::Delete,
            ][c],
            group_type: [
                GroupType::All,
                GroupType::Select,
                GroupType::Indirect,
                GroupType::FastFailover,
            ][t],
            group_id,
            buckets: b
                .into_iter()
                .map(|(weight, watch_port, watch_group, actions)| Bucket {
                    weight,
                    watch_port,
                    watch_group,
                    actions,
                })
                .collect(),
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => flow_mod().prop_map(Message::FlowMod),
        2 => group_mod().prop_map(Message::GroupMod),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| Message::EchoRequest(v.into())),
        1 => Just(Message::BarrierRequest),
        1 => Just(Message::FeaturesRequest),
        1 => (any::<u16>(), any::<u16>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(t, code, data)| Message::Error(ErrorMsg {
                error_type: t & 0x7fff,
                code,
                experimenter: None,
                data: data.into()
            })
        ),
        1 => (a_match(), any::<u64>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(match_, cookie, table_id, data)| Message::PacketIn(PacketIn {
                buffer_id: port::NO_BUFFER,
                total_len: data.len() as u16,
                reason: 1,
                table_id,
                cookie,
                match_,
                data: data.into(),
            })),
        1 => (prop::collection::vec(simple_action(), 0..4), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(actions, data)| Message::PacketOut(PacketOut::new(data, actions))),
        1 => any::<u32>().prop_map(Message::SetPacketInFormat),
        1 => (0usize..3, any::<u16>(), any::<u32>(), prop::collection::vec((any::<[u32; 2]>(), any::<u8>(), any::<bool>()), 0..3))
            .prop_map(|(c, flags, meter_id, bands)| Message::MeterMod(MeterMod {
                command: [MeterModCommand::Add, MeterModCommand::Modify, MeterModCommand::Delete][c],
                flags,
                meter_id,
                bands: bands.into_iter().map(|([rate, burst_size], prec_level, drop)| if drop {
                    MeterBand::Drop { rate, burst_size }
                } else {
                    MeterBand::DscpRemark { rate, burst_size, prec_level }
                }).collect(),
            })),
        1 => (
            prop::collection::vec(any::<u8>(), 0..80),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u64>()),
            a_match(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        )
            .prop_map(|(packet, full_len, table_id, cookie, metadata, userdata)| {
                Message::PacketIn2(PacketIn2 {
                    packet: packet.into(),
                    full_len,
                    buffer_id: None,
                    table_id,
                    cookie,
                    reason: Some(1),
                    metadata,
                    userdata: userdata.map(Into::into),
                    continuation: None,
                })
            }),
        2 => (any::<u32>(), flow_mod()).prop_map(|(xid, fm)| Message::BundleAdd(BundleAdd {
            bundle_id: 9,
            flags: 3,
            xid,
            message: Box::new(Message::FlowMod(fm)),
        })),
        2 => prop::collection::vec(
            (any::<u8>(), any::<[u32; 2]>(), any::<[u16; 4]>(), any::<[u64; 3]>(), a_match(),
             prop::collection::vec(instruction(), 0..3)),
            0..4
        ).prop_map(|v| Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(v.into_iter().map(|(table_id, d, t, c, match_, instructions)| FlowStats {
                table_id,
                duration_sec: d[0],
                duration_nsec: d[1],
                priority: t[0],
                idle_timeout: t[1],
                hard_timeout: t[2],
                flags: t[3],
                cookie: c[0],
                packet_count: c[1],
                byte_count: c[2],
                match_,
                instructions,
            }).collect()),
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn match_roundtrips(m in a_match()) {
        let mut out = BytesMut::new();
        m.encode(&mut out).unwrap();
        prop_assert_eq!(out.len(), m.wire_len());
        let fm = FlowMod { match_: m.clone(), ..FlowMod::default() };
        let bytes = Message::FlowMod(fm).to_bytes(1).unwrap();
        let (_, back) = Message::decode(&mut bytes.clone()).unwrap();
        let Message::FlowMod(back) = back else { panic!("not a flow mod") };
        prop_assert_eq!(back.match_, m);
    }

    #[test]
    fn a_flow_mod_encoded_from_its_parts_is_the_same_bytes(fm in flow_mod(), xid in any::<u32>()) {
        let whole = Message::FlowMod(fm.clone()).to_bytes(xid).unwrap();
        let match_wire = fm.match_.to_wire().unwrap();
        let mut instructions = BytesMut::new();
        Instruction::encode_list(&fm.instructions, &mut instructions).unwrap();
        let head = FlowMod { match_: Match::new(), instructions: vec![], ..fm };
        let parts = head.encoded(&match_wire, &instructions).to_bytes(xid).unwrap();
        prop_assert_eq!(parts, whole);
    }

    #[test]
    fn actions_roundtrip(actions in prop::collection::vec(action(), 0..6)) {
        let fm = FlowMod {
            instructions: vec![Instruction::ApplyActions(actions.clone())],
            ..FlowMod::default()
        };
        let bytes = Message::FlowMod(fm).to_bytes(7).unwrap();
        let (xid, back) = Message::decode(&mut bytes.clone()).unwrap();
        prop_assert_eq!(xid, 7);
        let Message::FlowMod(back) = back else { panic!("not a flow mod") };
        prop_assert_eq!(back.instructions, vec![Instruction::ApplyActions(actions)]);
    }

    #[test]
    fn messages_roundtrip(msg in message(), xid in any::<u32>()) {
        let bytes = msg.to_bytes(xid).unwrap();
        let mut buf = bytes.clone();
        let (x, back) = Message::decode(&mut buf).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(x, xid);
        prop_assert_eq!(&back, &msg);
        // And the encoding is stable.
        prop_assert_eq!(back.to_bytes(xid).unwrap(), bytes);
    }

    #[test]
    fn truncated_messages_fail_cleanly(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = msg.to_bytes(1).unwrap();
        let cut = cut.index(bytes.len());
        // Cut without fixing the header: always an error.
        prop_assert!(Message::decode(&mut Bytes::copy_from_slice(&bytes[..cut])).is_err());
        // Cut and make the header agree: never a panic.
        if cut >= 8 {
            let mut v = bytes[..cut].to_vec();
            v[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            let _ = Message::decode(&mut Bytes::from(v));
        }
    }

    #[test]
    fn corrupted_messages_never_panic(msg in message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut v = msg.to_bytes(1).unwrap().to_vec();
        let i = pos.index(v.len());
        v[i] = byte;
        let _ = Message::decode(&mut Bytes::from(v));
    }

    #[test]
    fn random_bytes_never_panic(mut v in prop::collection::vec(any::<u8>(), 8..300), t in 0u8..30) {
        v[0] = OFP_VERSION;
        v[1] = t;
        let len = v.len() as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        let _ = Message::decode(&mut Bytes::from(v));
    }
}
