//! The hashes ovs-vswitchd computes for `multipath` and for a select group's default method,
//! so that the trace follows the link and bucket the switch picks instead of assuming one.
//!
//! Written from OVS's sources (openvswitch/ovs): lib/multipath.c `multipath_execute` and
//! `multipath_algorithm`, lib/flow.c `flow_hash_fields`, `flow_hash_symmetric_l3l4` and
//! `flow_hash_symmetric_l4`, lib/jhash.c, lib/hash.h's murmur-based `hash_add` /
//! `hash_finish` / `hash_2words` (the build without SSE 4.2, as distributions ship it), and
//! ofproto-dpif-xlate.c's default select method (`group_best_live_bucket`). `flow_hash_symmetric_l3l4` adds the fields as they lie
//! in `struct flow`, in network byte order, read as host integers: on the little-endian
//! hosts OVS runs on here (x86-64, arm64) that is the address's and port's bytes read
//! little-endian, which is what this module does. Checked against `ovs-appctl ofproto/trace`
//! of ovs-vswitchd 3.1 (the unit tests carry its answers; `tests/tests/trace_agrees.rs` checks
//! a UDP Service's slots on a live cluster).

use std::net::Ipv4Addr;

use openflow::{HashFields, MultipathAlgorithm};

fn mhash_add(hash: u32, data: u32) -> u32 {
    let data = data
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (hash ^ data)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

fn mhash_finish(mut hash: u32) -> u32 {
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

fn hash_finish(hash: u32, last: u32) -> u32 {
    mhash_finish(hash ^ last)
}

fn hash_2words(x: u32, y: u32) -> u32 {
    hash_finish(mhash_add(mhash_add(x, 0), y), 8)
}

/// The IPv4 5-tuple a `symmetric_l3l4` hash reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FiveTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// lib/flow.c `flow_hash_symmetric_l3l4` for an IPv4 packet (not a fragment).
fn symmetric_l3l4(t: &FiveTuple, basis: u32, inc_udp_ports: bool) -> u32 {
    let as_host = |ip: Ipv4Addr| u32::from_le_bytes(ip.octets());
    let mut hash = mhash_add(basis, as_host(t.src) ^ as_host(t.dst));
    hash = mhash_add(hash, u32::from(t.proto));
    let ports = matches!(t.proto, 6 | 132) || (inc_udp_ports && t.proto == 17);
    if ports {
        let as_host16 = |p: u16| u16::from_le_bytes(p.to_be_bytes());
        hash = mhash_add(
            hash,
            u32::from(as_host16(t.src_port) ^ as_host16(t.dst_port)),
        );
    }
    hash_finish(hash, basis)
}

/// lib/flow.c `flow_hash_fields` for the field sets the trace computes (`symmetric_l3l4`,
/// `symmetric_l3l4+udp`); `None` for the others.
pub(super) fn flow_hash_fields(fields: HashFields, t: &FiveTuple, basis: u16) -> Option<u32> {
    match fields {
        HashFields::SymmetricL3L4 => Some(symmetric_l3l4(t, u32::from(basis), false)),
        HashFields::SymmetricL3L4Udp => Some(symmetric_l3l4(t, u32::from(basis), true)),
        HashFields::EthSrc | HashFields::SymmetricL4 | HashFields::NwSrc | HashFields::NwDst => {
            None
        }
    }
}

/// lib/multipath.c `multipath_algorithm`: the link (0..n_links) for a hash.
pub(super) fn multipath_link(
    hash: u32,
    algorithm: MultipathAlgorithm,
    n_links: u32,
    arg: u32,
) -> u32 {
    let n_links = n_links.max(1);
    match algorithm {
        MultipathAlgorithm::ModuloN => hash % n_links,
        MultipathAlgorithm::HashThreshold => {
            if n_links == 1 {
                0
            } else {
                hash / (u32::MAX / n_links + 1)
            }
        }
        MultipathAlgorithm::Hrw if n_links <= 64 => {
            let mut best = (0, hash_2words(hash, 0));
            for link in 1..n_links {
                let w = hash_2words(hash, link);
                if w > best.1 {
                    best = (link, w);
                }
            }
            best.0
        }
        MultipathAlgorithm::Hrw => iter_hash(hash, n_links, 0),
        MultipathAlgorithm::IterHash => iter_hash(hash, n_links, arg),
    }
}

fn iter_hash(hash: u32, n_links: u32, modulo: u32) -> u32 {
    let modulo = if modulo < n_links || modulo / 2 > n_links {
        n_links.next_power_of_two()
    } else {
        modulo
    };
    let mut i = 0;
    loop {
        let link = hash_2words(hash, i) % modulo;
        if link < n_links {
            return link;
        }
        i += 1;
    }
}

fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn jhash_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

/// lib/jhash.c `jhash_bytes` (Bob Jenkins' lookup3; words read as the little-endian host
/// reads them).
fn jhash_bytes(bytes: &[u8], basis: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(bytes.len() as u32)
        .wrapping_add(basis);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    let mut rest = bytes;
    while rest.len() >= 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        jhash_mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if !rest.is_empty() {
        let mut tail = [0u8; 12];
        tail[..rest.len()].copy_from_slice(rest);
        a = a.wrapping_add(word(&tail[0..4]));
        b = b.wrapping_add(word(&tail[4..8]));
        c = c.wrapping_add(word(&tail[8..12]));
        jhash_final(&mut a, &mut b, &mut c);
    }
    c
}

/// lib/flow.c `flow_hash_symmetric_l4` of an untagged IPv4 packet with these MACs, with
/// basis 0: what a select group's default method (ofproto-dpif-xlate.c
/// `xlate_default_select_group`) hashes. jhash of the 32-byte struct OVS fills: the
/// addresses XORed (bytes 0..4), the ethertype (16..18), the VLAN TCI (18..20, 0 here), the
/// TCP/SCTP ports XORed (20..22; UDP's are left out), the MACs XORed (22..28), the protocol
/// (28), padding.
pub(super) fn symmetric_l4(t: &FiveTuple, eth_src: [u8; 6], eth_dst: [u8; 6]) -> u32 {
    let mut f = [0u8; 32];
    for (i, (a, b)) in t.src.octets().iter().zip(t.dst.octets()).enumerate() {
        f[i] = a ^ b;
    }
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    if matches!(t.proto, 6 | 132) {
        f[20..22].copy_from_slice(&(t.src_port ^ t.dst_port).to_be_bytes());
    }
    for i in 0..6 {
        f[22 + i] = eth_src[i] ^ eth_dst[i];
    }
    f[28] = t.proto;
    jhash_bytes(&f, 0)
}

/// ofproto-dpif-xlate.c `group_best_live_bucket`: the bucket (index) of the highest score
/// `(hash_int(bucket_id, basis) & 0xffff) * weight`, the last of equal scores; OpenFlow 1.3
/// buckets have ids 0, 1, 2... in order. Every bucket counts as live (the pipeline's have no
/// watch port). Also returns the winning score (what ofproto/trace prints per bucket).
pub(super) fn best_bucket(basis: u32, weights: &[u16]) -> Option<(usize, u32)> {
    let mut best: Option<(usize, u32)> = None;
    for (i, w) in weights.iter().enumerate() {
        let score = (hash_2words(i as u32, basis) & 0xffff) * u32::from(*w);
        if best.is_none_or(|(_, s)| score >= s) {
            best = Some((i, score));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8, sp: u16, dp: u16) -> FiveTuple {
        FiveTuple {
            src: src.into(),
            dst: dst.into(),
            proto,
            src_port: sp,
            dst_port: dp,
        }
    }

    fn link(fields: HashFields, basis: u16, alg: MultipathAlgorithm, n: u32, t: &FiveTuple) -> u32 {
        multipath_link(flow_hash_fields(fields, t, basis).unwrap(), alg, n, 0)
    }

    /// The links ovs-vswitchd 3.1 chose (ofproto/trace of `multipath(...)` flows on a
    /// userspace bridge: `-> NXM_NX_REG7[0..15] is now 0x…`).
    #[test]
    fn links_are_those_ovs_vswitchd_picks() {
        use HashFields::*;
        use MultipathAlgorithm::*;
        for (sp, want) in [(1000, 1), (1001, 2), (40000, 4), (49152, 3)] {
            let t = tuple([10, 244, 1, 2], [10, 96, 0, 20], 17, sp, 53);
            assert_eq!(
                link(SymmetricL3L4Udp, 1234, ModuloN, 5, &t),
                want,
                "udp {sp}"
            );
        }
        // TCP, 10.244.2.7 → 10.96.3.4:443: (modulo_n/7 with +udp, hash_threshold/7, hrw/10,
        // iter_hash/10).
        for (sp, want) in [
            (1000, [0, 0, 4, 1]),
            (40000, [0, 5, 1, 5]),
            (49152, [4, 5, 6, 2]),
            (50001, [1, 1, 5, 1]),
        ] {
            let t = tuple([10, 244, 2, 7], [10, 96, 3, 4], 6, sp, 443);
            let got = [
                link(SymmetricL3L4Udp, 777, ModuloN, 7, &t),
                link(SymmetricL3L4, 777, HashThreshold, 7, &t),
                link(SymmetricL3L4, 99, Hrw, 10, &t),
                link(SymmetricL3L4, 99, IterHash, 10, &t),
            ];
            assert_eq!(got, want, "tcp {sp}");
        }
        for (sp, want) in [(1000, 2), (40000, 0)] {
            let t = tuple([10, 244, 2, 7], [10, 96, 3, 4], 132, sp, 9999);
            assert_eq!(link(SymmetricL3L4Udp, 5, ModuloN, 3, &t), want, "sctp {sp}");
        }
    }

    /// The default select method's scores ovs-vswitchd 3.1 printed (ofproto/trace of a
    /// group of 800 buckets of weight 100: `-> bucket N: score S`) for
    /// `tcp,dl_src=0a:58:0a:f4:01:02,dl_dst=0a:58:0a:f4:01:01,nw_src=10.244.1.2,
    /// nw_dst=10.96.0.10,tp_src=1000,tp_dst=80`.
    #[test]
    fn default_select_scores_are_those_ovs_vswitchd_prints() {
        let t = tuple([10, 244, 1, 2], [10, 96, 0, 10], 6, 1000, 80);
        let basis = symmetric_l4(
            &t,
            [0x0a, 0x58, 0x0a, 0xf4, 1, 2],
            [0x0a, 0x58, 0x0a, 0xf4, 1, 1],
        );
        let scores: Vec<u32> = (0..5)
            .map(|i| (hash_2words(i, basis) & 0xffff) * 100)
            .collect();
        assert_eq!(scores, [5009800, 445700, 3283700, 7400, 126100]);
        assert_eq!(best_bucket(basis, &[100; 3]), Some((0, 5009800)));
        // The bucket it used of the 800 (`-> using bucket N`), for this and other packets
        // with the same MACs; UDP's ports are left out of the hash.
        let macs = (
            [0x0a, 0x58, 0x0a, 0xf4, 1, 2],
            [0x0a, 0x58, 0x0a, 0xf4, 1, 1],
        );
        for (t, want) in [
            (t, 634),
            (tuple([10, 244, 1, 2], [10, 96, 0, 10], 6, 40000, 80), 50),
            (tuple([10, 244, 2, 9], [10, 96, 5, 1], 6, 33333, 443), 797),
            (tuple([10, 244, 1, 2], [10, 96, 0, 10], 17, 1000, 53), 509),
        ] {
            let basis = symmetric_l4(&t, macs.0, macs.1);
            assert_eq!(
                best_bucket(basis, &[100; 800]).map(|b| b.0),
                Some(want),
                "{t:?}"
            );
        }
        assert_eq!(
            best_bucket(basis, &[0, 0]),
            Some((1, 0)),
            "the last of equal scores"
        );
    }

    #[test]
    fn symmetric_means_both_directions_hash_alike_and_udp_ports_count_only_with_udp() {
        let a = tuple([10, 244, 1, 2], [10, 96, 0, 20], 17, 40000, 53);
        let b = tuple([10, 96, 0, 20], [10, 244, 1, 2], 17, 53, 40000);
        for f in [HashFields::SymmetricL3L4, HashFields::SymmetricL3L4Udp] {
            assert_eq!(flow_hash_fields(f, &a, 7), flow_hash_fields(f, &b, 7));
        }
        let c = FiveTuple {
            src_port: 40001,
            ..a
        };
        assert_eq!(
            flow_hash_fields(HashFields::SymmetricL3L4, &a, 7),
            flow_hash_fields(HashFields::SymmetricL3L4, &c, 7)
        );
        assert_ne!(
            flow_hash_fields(HashFields::SymmetricL3L4Udp, &a, 7),
            flow_hash_fields(HashFields::SymmetricL3L4Udp, &c, 7)
        );
        assert_eq!(flow_hash_fields(HashFields::EthSrc, &a, 7), None);
    }
}
