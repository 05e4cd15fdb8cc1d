//! Encode/decode rate of a batch of 100k realistic flow-mods (pod forwarding flows with
//! conntrack and register loads), printed as messages per second.
//!
//! Run: `cargo bench -p openflow --bench codec`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use bytes::BytesMut;
use openflow::*;

const N: u32 = 100_000;

fn flow(i: u32) -> Message {
    let ip = Ipv4Addr::from(0x0a00_0000 + i);
    let mac = [0x02, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1];
    let m = Match::new()
        .with(MatchField::u16(Field::EthType, 0x0800))
        .and_then(|m| m.with(MatchField::ipv4(Field::Ipv4Dst, ip)))
        .and_then(|m| m.with(MatchField::u32_masked(Field::Reg(0), 1, 0xff)))
        .and_then(|m| m.with(MatchField::u32_masked(Field::CtState, 0x22, 0x22)))
        .expect("valid match");
    FlowMod::add(
        60,
        200,
        m,
        vec![
            Instruction::ApplyActions(vec![
                Action::SetField(MatchField::mac(Field::EthDst, mac)),
                Action::load(Subfield::whole(Field::Reg(1)), u64::from(i % 4000 + 1)),
                Action::Ct(Ct {
                    commit: true,
                    zone: CtZone::Value(1),
                    actions: vec![Action::SetField(MatchField::u32(Field::CtMark, 2))],
                    ..Ct::default()
                }),
            ]),
            Instruction::GotoTable(70),
        ],
    )
    .with_cookie(0x1000_0000_0000 | u64::from(i))
    .into()
}

fn main() {
    let msgs: Vec<Message> = (0..N).map(flow).collect();

    let start = Instant::now();
    let mut out = BytesMut::with_capacity(msgs.len() * 200);
    for (i, m) in msgs.iter().enumerate() {
        m.encode(i as u32, &mut out).expect("encode");
    }
    let enc = start.elapsed();
    let bytes = out.len();

    let mut buf = out.freeze();
    let start = Instant::now();
    let mut n = 0u32;
    while !buf.is_empty() {
        let (_, m) = Message::decode(&mut buf).expect("decode");
        black_box(m);
        n += 1;
    }
    let dec = start.elapsed();
    assert_eq!(n, N);

    let rate = |d: std::time::Duration| f64::from(N) / d.as_secs_f64();
    println!(
        "encode: {N} flow-mods ({bytes} bytes) in {:.3} s = {:.0} messages/s",
        enc.as_secs_f64(),
        rate(enc)
    );
    println!(
        "decode: {N} flow-mods in {:.3} s = {:.0} messages/s",
        dec.as_secs_f64(),
        rate(dec)
    );
}
