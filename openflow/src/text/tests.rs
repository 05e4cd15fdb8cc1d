//! Parse → print round trips against golden output captured from ovs-ofctl, codec round
//! trips of everything parsed, and errors for bad lines.

#[path = "golden.rs"]
mod golden;

use bytes::BytesMut;

use super::*;
use crate::message::{FlowMod, FlowStats, GroupDesc};

fn stats_of(fm: &FlowMod) -> FlowStats {
    FlowStats::from(fm)
}

#[test]
fn every_corpus_flow_prints_as_ovs_ofctl_dumps_it() {
    let mut failures = Vec::new();
    for (input, expected) in golden::FLOWS {
        match parse_flow(input) {
            Ok(fm) => {
                let got = format_flow_stats(&stats_of(&fm), false);
                if got != *expected {
                    failures.push(format!("{input}\n   ovs: {expected}\n   ours: {got}"));
                }
            }
            Err(e) => failures.push(format!("{input}\n   parse error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ovs_output_parses_back_to_the_same_flow() {
    for (input, expected) in golden::FLOWS {
        let a = parse_flow(input).unwrap_or_else(|e| panic!("{e}"));
        // The dump line is valid add-flow syntax; `actions=` must follow the match.
        let b = parse_flow(expected).unwrap_or_else(|e| panic!("{expected}: {e}"));
        assert_eq!(a, b, "{input} vs {expected}");
    }
}

#[test]
fn parsed_flows_survive_the_codec() {
    for (input, _) in golden::FLOWS {
        let fm = parse_flow(input).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = BytesMut::new();
        fm.encode_body(&mut buf)
            .unwrap_or_else(|e| panic!("{input}: encode: {e}"));
        let mut r = crate::wire::Reader::new(buf.freeze());
        let back = FlowMod::decode_body(&mut r).unwrap_or_else(|e| panic!("{input}: decode: {e}"));
        assert_eq!(
            format_flow_stats(&stats_of(&back), false),
            format_flow_stats(&stats_of(&fm), false),
            "{input}"
        );
    }
}

#[test]
fn every_corpus_group_prints_as_ovs_ofctl_dumps_it() {
    let mut failures = Vec::new();
    for (input, expected) in golden::GROUPS {
        match parse_group(input) {
            Ok(g) => {
                let got = format_group_desc(&GroupDesc {
                    group_type: g.group_type,
                    group_id: g.group_id,
                    buckets: g.buckets.clone(),
                });
                if got != *expected {
                    failures.push(format!("{input}\n   ovs: {expected}\n   ours: {got}"));
                }
                let again = parse_group(&got).unwrap_or_else(|e| panic!("{got}: {e}"));
                assert_eq!(again, g, "{got}");
            }
            Err(e) => failures.push(format!("{input}\n   parse error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn stats_line_has_ovs_layout() {
    let mut fs = stats_of(&parse_flow("table=3,cookie=0x5,priority=7,ip,actions=drop").unwrap());
    fs.duration_sec = 10;
    fs.duration_nsec = 639_000_000;
    fs.packet_count = 2;
    fs.byte_count = 196;
    assert_eq!(
        format_flow_stats(&fs, true),
        "cookie=0x5, duration=10.639s, table=3, n_packets=2, n_bytes=196, priority=7,ip actions=drop"
    );
    fs.cookie = 0;
    fs.table_id = 0;
    fs.duration_nsec = 0;
    assert_eq!(
        format_flow_stats(&fs, true),
        "cookie=0x0, duration=10s, table=0, n_packets=2, n_bytes=196, priority=7,ip actions=drop"
    );
    assert_eq!(format_flow_stats(&fs, false), "priority=7,ip actions=drop");
}

#[test]
fn filters_take_cookie_masks_and_tables() {
    let f = parse_flow_filter("table=3,cookie=0x10/0xff,tcp,tp_dst=80").unwrap();
    assert_eq!(f.table_id, Some(3));
    assert_eq!(f.cookie, Some((0x10, 0xff)));
    assert_eq!(format_match(&f.match_, 0x8000), "tcp,tp_dst=80");
    let all = parse_flow_filter("").unwrap();
    assert_eq!(all.to_stats_request().table_id, crate::port::TABLE_ALL);
    assert!(parse_flow_filter("cookie=0x5").is_err());
    assert!(parse_flow_filter("ip,actions=drop").is_err());
}

fn error_of(line: &str) -> String {
    parse_flow(line)
        .map(|fm| format!("{fm:?}"))
        .expect_err(line)
        .to_string()
}

#[test]
fn errors_name_the_field_and_the_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            "ip,nw_src=10.0.0.300,actions=drop",
            &["nw_src", "10.0.0.300", "IPv4"],
        ),
        (
            "tcp,tp_dst=70000,actions=drop",
            &["tp_dst", "70000", "16 bits"],
        ),
        ("bogus=1,actions=drop", &["unknown keyword bogus"]),
        ("ip", &["must specify an action"]),
        (
            "ip,actions=frobnicate:1",
            &["actions", "unknown action", "frobnicate"],
        ),
        ("tcp_dst=80,actions=drop", &["tcp_dst", "requires"]),
        (
            "reg0=0x1/0xf,actions=output:1,drop",
            &["drop", "must not be accompanied"],
        ),
        ("actions=goto_table:1,output:2", &["instruction ordering"]),
        (
            "actions=load:0x10000->NXM_NX_REG0[0..15]",
            &["load", "does not fit"],
        ),
        (
            "actions=move:NXM_NX_REG0[0..7]->NXM_NX_REG1[]",
            &["move", "8 bits", "32 bits"],
        ),
        ("ip,actions=ct(zone=NXM_NX_REG0[])", &["zone", "16 bits"]),
        ("actions=conjunction(1,3/2)", &["clause 3"]),
        ("cookie=0x1/0x1,actions=drop", &["cookie mask"]),
        ("ct_state=+bogus,actions=drop", &["ct_state", "bogus"]),
        (
            "actions=set_field:1->nosuchfield",
            &["set_field", "nosuchfield"],
        ),
    ];
    for (line, needles) in cases {
        let e = error_of(line);
        for n in *needles {
            assert!(
                e.contains(n),
                "error for {line:?} should mention {n:?}: {e}"
            );
        }
    }
}

#[test]
fn file_errors_carry_the_line_number() {
    let text = "# comment\n\ntable=0,actions=drop\n  \ntable=1,ip,nw_dst=1.2.3,actions=drop\n";
    let e = parse_flows(text).unwrap_err();
    assert_eq!(e.line, Some(5));
    assert!(e.to_string().starts_with("line 5: nw_dst"), "{e}");
    assert_eq!(
        parse_flows("table=0,actions=drop # trailing\n")
            .unwrap()
            .len(),
        1
    );
    let e = parse_groups("group_id=1,type=all,bucket=weight:5,actions=output:1").unwrap_err();
    assert!(e.to_string().contains("weights"), "{e}");
    assert_eq!(e.line, Some(1));
}

#[test]
fn bucket_ids_are_accepted_and_dropped_as_ovs_ofctl_does_for_openflow13() {
    let with = parse_groups(
        "group_id=3,type=select,bucket=bucket_id:0,weight:5,actions=output:1,bucket=bucket_id:7,actions=output:2",
    )
    .unwrap();
    let without = parse_groups(
        "group_id=3,type=select,bucket=weight:5,actions=output:1,bucket=actions=output:2",
    )
    .unwrap();
    assert_eq!(with, without);
    let e = parse_groups("group_id=3,type=all,bucket=bucket_id:x,actions=output:1").unwrap_err();
    assert!(e.to_string().contains("bucket_id"), "{e}");
    let e = parse_groups("group_id=3,type=all,bucket=bucket_id:4294967295,actions=output:1")
        .unwrap_err();
    assert!(e.to_string().contains("invalid bucket_id"), "{e}");
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    proptest! {
        /// Any register/IP/port match with any mask prints to text that parses back to
        /// the same match.
        #[test]
        fn matches_round_trip(
            reg in 0u8..16,
            v in any::<u32>(),
            m in any::<u32>(),
            ip in any::<u32>(),
            prefix in 0u32..=32,
            tp in any::<u16>(),
            prio in any::<u16>(),
            table in 0u8..=253,
        ) {
            let ip = std::net::Ipv4Addr::from(ip);
            let line = format!(
                "table={table},priority={prio},tcp,reg{reg}=0x{v:x}/0x{m:x},nw_dst={ip}/{prefix},tp_dst={tp},actions=drop"
            );
            let fm = parse_flow(&line).unwrap();
            let printed = format_flow_mod(&fm);
            let again = parse_flow(&printed).unwrap();
            prop_assert_eq!(again, fm, "{} printed as {}", line, printed);
        }

        /// Loads and moves on any bit range print and parse back unchanged.
        #[test]
        fn subfield_actions_round_trip(
            ofs in 0u16..32,
            len in 1u16..=32,
            value in any::<u32>(),
            dst in 0u8..16,
        ) {
            let end = (ofs + len - 1).min(31);
            let bits = end - ofs + 1;
            let value = if bits == 32 { value } else { value & ((1u32 << bits) - 1) };
            let line = format!(
                "actions=load:0x{value:x}->NXM_NX_REG{dst}[{ofs}..{end}],move:NXM_NX_REG1[{ofs}..{end}]->NXM_NX_REG2[{ofs}..{end}]"
            );
            let fm = parse_flow(&line).unwrap();
            let printed = format_flow_mod(&fm);
            prop_assert_eq!(parse_flow(&printed).unwrap(), fm);
        }
    }
}

#[test]
fn openflow_1_4_and_1_5_keywords_are_checked_and_dropped_as_ovs_ofctl_does_for_openflow13() {
    // ovs-ofctl 3.1 -O OpenFlow13 accepts these and sends none of them.
    let plain = parse_groups("group_id=20,type=select,bucket=actions=output:2").unwrap();
    for line in [
        "group_id=20,type=select,selection_method=hash,fields(ip_src,tcp_dst),bucket=actions=output:2",
        "group_id=20,type=select,selection_method=dp_hash,selection_method_param=7,bucket=actions=output:2",
        "group_id=20,type=select,selection_method=hash,fields=ip_src,bucket=actions=output:2",
    ] {
        assert_eq!(parse_groups(line).unwrap(), plain, "{line}");
    }
    for (line, why) in [
        (
            "group_id=20,type=select,selection_method=hash,fields(nosuch),bucket=output:2",
            "unknown field nosuch",
        ),
        (
            "group_id=20,type=select,selection_method_param=7,bucket=output:2",
            "only allowed with \"selection_method\"",
        ),
        (
            "group_id=20,type=select,fields=ip_src,bucket=output:2",
            "only be specified with \"selection_method=hash\"",
        ),
    ] {
        let e = parse_groups(line).unwrap_err();
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
    let with = parse_flows("table=70,importance=5,actions=drop").unwrap();
    assert_eq!(with, parse_flows("table=70,actions=drop").unwrap());
    let e = parse_flows("table=70,importance=70000,actions=drop").unwrap_err();
    assert!(e.to_string().contains("importance"), "{e}");
}
