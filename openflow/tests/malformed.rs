//! Malformed input built from real OVS messages: every truncation fails with an error,
//! and lengths that lie are named in the error.

use bytes::Bytes;
use openflow::{Error, Message};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// Captured from ovs-ofctl / ovs-vswitchd (see tests/golden.rs for what they are).
const GOLDEN: &[&str] = &[
    "040e017000000006000000000000123400000000000000000100000000000005ffffffffffffffffffffffff000000000001007d80000a020800800017080a000000ff000000800014010680001c020050ffff55084f4e46000002000200014004010101010001070800000005000000ff0001d30800000021000000210001d604000000010001d810000000000000000000000000000000020001f00401020304800004080000000000000007000000000400b800000000ffff00480000232000230001000000000005ff0000000000ffff00200000232000240000001100330101010101010105006400c800000000001900100001d6040000000100000000ffff0018000023200007000300010004000000000000000100190010000102040000000100000000ffff00180000232000070103000104040000000000000001ffff00180000232000060020000000000001000400010404ffff001000002320000efff8070000000001000805000000",
    "040e016000000006000000000000000000000000000000000300000000000014ffffffffffffffffffffffff000000000001003480000004000000038000080600112233445580000606aabbccddeeff80000a02080680002a02000180002e040a00000100000000000400f800000000ffff0050000023200010001e003c0007000000000000009900000a0000000000003000000406000000000206000020101234000102040000081000000002000000010004000010100000000200000000ffff001800002320000f000f00010204ffff000000000000ffff00300000232000250000000000000000000800800000000100080003000000030007010203000004000400000000ffff0010000023200014ffff00020000001100088100000000120008000000000016000800000005ffff001000002320002b0000000000000000001000000004000000000000000000000010fffffffdffff000000000000",
    "040f00600000000600000100000000050020000affffffffffffffff000000000000001000000001000000000000000000300014ffffffffffffffff0000000000190010800018040a0000090000000000000010000000020000000000000000",
    "04040060000000074f4e4600000008fd0000000000000003040e004800000007000000000000000000000000000000000700000000000002ffffffffffffffffffffffff000000000001000a80000a0208060000000000000001000808000000",
];

#[test]
fn every_truncation_is_an_error() {
    for g in GOLDEN {
        let full = hex(g);
        assert!(Message::decode(&mut Bytes::from(full.clone())).is_ok());
        for cut in 0..full.len() {
            // The header still claims the full length.
            let r = Message::decode(&mut Bytes::copy_from_slice(&full[..cut]));
            assert!(r.is_err(), "cut at {cut} of {} decoded: {r:?}", full.len());
            // The header agrees with the cut: structures inside are truncated. Every
            // structure of these messages is 8-byte aligned, so an unaligned cut can
            // never be a valid message.
            if cut >= 8 && cut % 8 != 0 {
                let mut v = full[..cut].to_vec();
                v[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
                let r = Message::decode(&mut Bytes::from(v));
                assert!(r.is_err(), "re-headed cut at {cut} decoded: {r:?}");
            }
        }
    }
}

#[test]
fn lying_lengths_are_named() {
    let full = hex(GOLDEN[0]);
    // Header shorter than itself.
    let mut v = full.clone();
    v[2..4].copy_from_slice(&4u16.to_be_bytes());
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadLength {
                what: "ofp_header",
                ..
            }
        ),
        "{e}"
    );

    // ofp_match length (at offset 48+2) larger than the message.
    let mut v = full.clone();
    v[50..52].copy_from_slice(&0x0fffu16.to_be_bytes());
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(e.to_string().contains("ofp_match"), "{e}");

    // First instruction (after the 0x80-byte match) with length 4: not a multiple of 8.
    let ins = 48 + 0x80;
    let mut v = full.clone();
    v[ins + 2..ins + 4].copy_from_slice(&4u16.to_be_bytes());
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadLength {
                what: "instruction",
                ..
            }
        ),
        "{e}"
    );

    // First action inside apply_actions (ct, length 0x48) claiming 0x1000 bytes.
    let act = ins + 8;
    let mut v = full.clone();
    v[act + 2..act + 4].copy_from_slice(&0x1000u16.to_be_bytes());
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(matches!(e, Error::Truncated { what: "action", .. }), "{e}");

    // An OXM field whose length does not match the field's width.
    let mut v = full.clone();
    v[52 + 3] = 3; // eth_type with a 3-byte value
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(e.to_string().contains("eth_type"), "{e}");
}

#[test]
fn other_versions_are_rejected_except_hello() {
    let mut v = hex(GOLDEN[2]);
    v[0] = 0x01;
    let e = Message::decode(&mut Bytes::from(v)).unwrap_err();
    assert!(matches!(e, Error::BadVersion { version: 1 }));
    let hello = hex("0100000800000001");
    assert!(matches!(
        Message::decode(&mut Bytes::from(hello)),
        Ok((1, Message::Hello(_)))
    ));
}
