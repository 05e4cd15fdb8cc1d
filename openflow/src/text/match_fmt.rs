//! Printing a match exactly as `match_format()` in OVS lib/match.c does.
//!
//! OVS does not print the OXM list it received: it first folds it into its `struct match`
//! (registers, VLAN TCI, `nw_tos`, `tp_src`...), then prints that in a fixed order with
//! protocol shorthands (`tcp` for `dl_type=0x0800,nw_proto=6`). [`MatchView`] is that
//! folded form, built from our field list, so that our output is byte-for-byte theirs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::value::{
    self, CT_STATE_FLAGS, TCP_FLAGS, TUN_FLAGS, fmt_eth_masked, fmt_flags, fmt_flags_masked,
    fmt_hex, fmt_ipv4_masked, fmt_ipv6_masked, to_u128,
};
use crate::field::Field;

/// Highest priority... the default OpenFlow priority, which `match_format()` omits.
pub(crate) const DEFAULT_PRIORITY: u16 = 0x8000;

const ETH_TYPE_IP: u16 = 0x0800;
const ETH_TYPE_IPV6: u16 = 0x86dd;
const ETH_TYPE_ARP: u16 = 0x0806;
const ETH_TYPE_RARP: u16 = 0x8035;

/// A value and its mask (all-ones for an exact match), big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Masked {
    value: Vec<u8>,
    mask: Vec<u8>,
}

impl Masked {
    fn exact_u(&self) -> u128 {
        to_u128(&self.value)
    }
    fn is_exact(&self) -> bool {
        self.mask.iter().all(|&b| b == 0xff)
    }
    fn is_zero_mask(&self) -> bool {
        self.mask.iter().all(|&b| b == 0)
    }
}

/// A match folded the way OVS's `struct match` holds it. Build it with
/// [`MatchView::new`] from `(field, value, mask)` triples.
#[derive(Debug, Default, Clone)]
pub(crate) struct MatchView {
    fields: BTreeMap<Field, Masked>,
    regs: [(u32, u32); 16],
    /// VLAN TCI value and mask (0x1000 = CFI/present bit).
    vlan_tci: (u16, u16),
}

impl MatchView {
    /// Folds a list of match fields. `mask` is `None` for exact matches.
    pub(crate) fn new<'a>(
        items: impl IntoIterator<Item = (Field, &'a [u8], Option<&'a [u8]>)>,
    ) -> MatchView {
        let mut view = MatchView::default();
        for (field, value, mask) in items {
            let mask = mask
                .map(|m| m.to_vec())
                .unwrap_or_else(|| vec![0xff; value.len()]);
            let value: Vec<u8> = value.iter().zip(&mask).map(|(v, m)| v & m).collect();
            match field {
                Field::Reg(i) => {
                    let i = usize::from(i & 15);
                    view.regs[i] = (to_u128(&value) as u32, to_u128(&mask) as u32);
                }
                Field::XReg(i) => {
                    let v = to_u128(&value) as u64;
                    let m = to_u128(&mask) as u64;
                    let i = usize::from(i & 7) * 2;
                    view.regs[i] = ((v >> 32) as u32, (m >> 32) as u32);
                    view.regs[i + 1] = (v as u32, m as u32);
                }
                Field::XXReg(i) => {
                    let v = to_u128(&value);
                    let m = to_u128(&mask);
                    let i = usize::from(i & 3) * 4;
                    for k in 0..4 {
                        let shift = 96 - 32 * k;
                        view.regs[i + k] = ((v >> shift) as u32, (m >> shift) as u32);
                    }
                }
                Field::VlanVid => {
                    let v = to_u128(&value) as u16 & 0x1fff;
                    let m = to_u128(&mask) as u16 & 0x1fff;
                    view.vlan_tci.0 = (view.vlan_tci.0 & 0xe000) | (v & m);
                    view.vlan_tci.1 = (view.vlan_tci.1 & 0xe000) | m;
                }
                Field::VlanPcp => {
                    let pcp = (to_u128(&value) as u16) & 7;
                    view.vlan_tci.0 = (view.vlan_tci.0 & 0x1fff) | (pcp << 13) | 0x1000;
                    view.vlan_tci.1 |= 0xf000;
                }
                _ => {
                    view.fields.insert(field, Masked { value, mask });
                }
            }
        }
        view
    }

    fn get(&self, f: Field) -> Option<&Masked> {
        self.fields.get(&f).filter(|m| !m.is_zero_mask())
    }

    fn u(&self, f: Field) -> Option<u128> {
        self.get(f).map(Masked::exact_u)
    }

    /// Appends the match as `match_format()` prints it, priority included unless it is the
    /// default (32768). No trailing comma.
    pub(crate) fn format(&self, out: &mut String, priority: u16) {
        self.format_named(out, priority, &super::Names::default());
    }

    /// [`format`](Self::format) with port names, as `ovs-ofctl --names` prints them.
    pub(crate) fn format_named(&self, out: &mut String, priority: u16, names: &super::Names) {
        let start = out.len();
        if priority != DEFAULT_PRIORITY {
            let _ = write!(out, "priority={priority},");
        }
        if let Some(m) = self.get(Field::PktMark) {
            put_u32_masked(out, "pkt_mark", m);
        }
        if let Some(v) = self.u(Field::ConjId) {
            let _ = write!(out, "conj_id={v},");
        }
        if let Some(m) = self.get(Field::CtState) {
            let v = m.exact_u() as u32 & 0xff;
            let mask = to_u128(&m.mask) as u32 & 0xff;
            if mask != 0 {
                out.push_str("ct_state=");
                if mask == 0xff {
                    out.push_str(&fmt_flags(CT_STATE_FLAGS, v, '|'));
                } else {
                    out.push_str(&fmt_flags_masked(CT_STATE_FLAGS, v, mask, 0xff));
                }
                out.push(',');
            }
        }
        if let Some(m) = self.get(Field::CtZone) {
            put_uint_masked(out, "ct_zone", m);
        }
        if let Some(m) = self.get(Field::CtMark) {
            put_u32_masked(out, "ct_mark", m);
        }
        if let Some(m) = self.get(Field::CtLabel) {
            out.push_str("ct_label=");
            out.push_str(&fmt_hex(&m.value));
            if !m.is_exact() {
                out.push('/');
                out.push_str(&fmt_hex(&m.mask));
            }
            out.push(',');
        }
        self.put_ip(out, "ct_nw_src", Field::CtNwSrc);
        self.put_ip(out, "ct_ipv6_src", Field::CtIpv6Src);
        self.put_ip(out, "ct_nw_dst", Field::CtNwDst);
        self.put_ip(out, "ct_ipv6_dst", Field::CtIpv6Dst);
        if let Some(v) = self.u(Field::CtNwProto) {
            let _ = write!(out, "ct_nw_proto={v},");
            if let Some(m) = self.get(Field::CtTpSrc) {
                put_uint_masked(out, "ct_tp_src", m);
            }
            if let Some(m) = self.get(Field::CtTpDst) {
                put_uint_masked(out, "ct_tp_dst", m);
            }
        }

        let dl_type = self.u(Field::EthType).map(|v| v as u16);
        let nw_proto = self.u(Field::IpProto).map(|v| v as u8);
        let mut skip_type = false;
        let mut skip_proto = false;
        if let Some(t) = dl_type {
            skip_type = true;
            let word = match t {
                ETH_TYPE_IP => match nw_proto {
                    Some(1) => Some("icmp"),
                    Some(2) => Some("igmp"),
                    Some(6) => Some("tcp"),
                    Some(17) => Some("udp"),
                    Some(132) => Some("sctp"),
                    _ => None,
                }
                .inspect(|_| skip_proto = true)
                .or(Some("ip")),
                ETH_TYPE_IPV6 => match nw_proto {
                    Some(58) => Some("icmp6"),
                    Some(6) => Some("tcp6"),
                    Some(17) => Some("udp6"),
                    Some(132) => Some("sctp6"),
                    _ => None,
                }
                .inspect(|_| skip_proto = true)
                .or(Some("ipv6")),
                ETH_TYPE_ARP => Some("arp"),
                ETH_TYPE_RARP => Some("rarp"),
                0x8847 => Some("mpls"),
                0x8848 => Some("mplsm"),
                _ => {
                    skip_type = false;
                    None
                }
            };
            if let Some(w) = word {
                out.push_str(w);
                out.push(',');
            }
        }
        for (i, &(v, m)) in self.regs.iter().enumerate() {
            if m != 0 {
                let _ = write!(out, "reg{i}={}", hash_x(u128::from(v)));
                if m != u32::MAX {
                    let _ = write!(out, "/{}", hash_x(u128::from(m)));
                }
                out.push(',');
            }
        }
        if let Some(m) = self.get(Field::TunnelId) {
            put_u32_masked(out, "tun_id", m);
        }
        self.put_ip(out, "tun_src", Field::TunSrc);
        self.put_ip(out, "tun_dst", Field::TunDst);
        self.put_ip(out, "tun_ipv6_src", Field::TunIpv6Src);
        self.put_ip(out, "tun_ipv6_dst", Field::TunIpv6Dst);
        if let Some(m) = self.get(Field::TunFlags) {
            // OVS's FLOW_TNL_F_MASK also covers private flags NXM cannot express, so a
            // match on the public ones always prints in the +flag form.
            let v = m.exact_u() as u32;
            let mask = to_u128(&m.mask) as u32;
            let _ = write!(
                out,
                "tun_flags={},",
                fmt_flags_masked(TUN_FLAGS, v, mask, 0xffff)
            );
        }
        for i in 0..64u8 {
            if let Some(m) = self.get(Field::TunMetadata(i)) {
                let _ = write!(out, "tun_metadata{i}={}", fmt_hex(&m.value));
                if !m.is_exact() {
                    let _ = write!(out, "/{}", fmt_hex(&m.mask));
                }
                out.push(',');
            }
        }
        if let Some(m) = self.get(Field::Metadata) {
            put_u32_masked(out, "metadata", m);
        }
        if let Some(v) = self.u(Field::InPort) {
            let _ = write!(out, "in_port={},", names.port(v as u32));
        }
        self.put_vlan(out);
        if let Some(m) = self.get(Field::EthSrc) {
            let _ = write!(out, "dl_src={},", fmt_eth_masked(&m.value, &m.mask));
        }
        if let Some(m) = self.get(Field::EthDst) {
            let _ = write!(out, "dl_dst={},", fmt_eth_masked(&m.value, &m.mask));
        }
        if let (false, Some(t)) = (skip_type, dl_type) {
            let _ = write!(out, "dl_type=0x{t:04x},");
        }
        let is_arp = matches!(dl_type, Some(ETH_TYPE_ARP) | Some(ETH_TYPE_RARP));
        if dl_type == Some(ETH_TYPE_IPV6) {
            self.put_ip(out, "ipv6_src", Field::Ipv6Src);
            self.put_ip(out, "ipv6_dst", Field::Ipv6Dst);
            if let Some(m) = self.get(Field::Ipv6Flabel) {
                let _ = write!(out, "ipv6_label=0x{:05x}", m.exact_u());
                if !m.is_exact() {
                    let _ = write!(out, "/0x{:05x}", to_u128(&m.mask));
                }
                out.push(',');
            }
        } else if is_arp {
            self.put_ip(out, "arp_spa", Field::ArpSpa);
            self.put_ip(out, "arp_tpa", Field::ArpTpa);
        } else {
            self.put_ip(out, "nw_src", Field::Ipv4Src);
            self.put_ip(out, "nw_dst", Field::Ipv4Dst);
        }
        if !skip_proto {
            if is_arp {
                if let Some(v) = self.u(Field::ArpOp) {
                    let _ = write!(out, "arp_op={v},");
                }
            } else if let Some(v) = nw_proto {
                let _ = write!(out, "nw_proto={v},");
            }
        }
        if is_arp {
            if let Some(m) = self.get(Field::ArpSha) {
                let _ = write!(out, "arp_sha={},", fmt_eth_masked(&m.value, &m.mask));
            }
            if let Some(m) = self.get(Field::ArpTha) {
                let _ = write!(out, "arp_tha={},", fmt_eth_masked(&m.value, &m.mask));
            }
        }
        if let Some(v) = self.u(Field::IpDscp) {
            let _ = write!(out, "nw_tos={},", (v as u8 & 0x3f) << 2);
        }
        if let Some(v) = self.u(Field::IpEcn) {
            let _ = write!(out, "nw_ecn={},", v as u8 & 3);
        }
        if let Some(v) = self.u(Field::IpTtl) {
            let _ = write!(out, "nw_ttl={v},");
        }
        if let Some(m) = self.get(Field::IpFrag) {
            let v = m.exact_u() as u8 & 3;
            let mask = to_u128(&m.mask) as u8 & 3;
            let any = v & 1 != 0;
            let later = v & 2 != 0;
            let word = match mask {
                3 => Some(match (any, later) {
                    (true, true) => "later",
                    (true, false) => "first",
                    (false, true) => "<error>",
                    (false, false) => "no",
                }),
                1 => Some(if any { "yes" } else { "no" }),
                2 => Some(if later { "later" } else { "not_later" }),
                _ => None,
            };
            if let Some(w) = word {
                let _ = write!(out, "nw_frag={w},");
            }
        }
        match (dl_type, nw_proto) {
            (Some(ETH_TYPE_IP), Some(1)) => {
                self.put_tp(out, "icmp_type", Field::Icmpv4Type);
                self.put_tp(out, "icmp_code", Field::Icmpv4Code);
            }
            (Some(ETH_TYPE_IPV6), Some(58)) => {
                self.put_tp(out, "icmp_type", Field::Icmpv6Type);
                self.put_tp(out, "icmp_code", Field::Icmpv6Code);
                self.put_ip(out, "nd_target", Field::NdTarget);
                if let Some(m) = self.get(Field::NdSll) {
                    let _ = write!(out, "nd_sll={},", fmt_eth_masked(&m.value, &m.mask));
                }
                if let Some(m) = self.get(Field::NdTll) {
                    let _ = write!(out, "nd_tll={},", fmt_eth_masked(&m.value, &m.mask));
                }
            }
            (_, Some(6)) => {
                self.put_tp(out, "tp_src", Field::TcpSrc);
                self.put_tp(out, "tp_dst", Field::TcpDst);
            }
            (_, Some(17)) => {
                self.put_tp(out, "tp_src", Field::UdpSrc);
                self.put_tp(out, "tp_dst", Field::UdpDst);
            }
            (_, Some(132)) => {
                self.put_tp(out, "tp_src", Field::SctpSrc);
                self.put_tp(out, "tp_dst", Field::SctpDst);
            }
            _ => {}
        }
        let is_ip = matches!(dl_type, Some(ETH_TYPE_IP) | Some(ETH_TYPE_IPV6));
        if is_ip
            && nw_proto == Some(6)
            && let Some(m) = self.get(Field::TcpFlags)
        {
            let v = m.exact_u() as u32 & 0xfff;
            let mask = to_u128(&m.mask) as u32 & 0xfff;
            let _ = write!(
                out,
                "tcp_flags={},",
                fmt_flags_masked(TCP_FLAGS, v, mask, 0xfff)
            );
        }
        if out.len() > start && out.ends_with(',') {
            out.pop();
        }
    }

    fn put_ip(&self, out: &mut String, name: &str, f: Field) {
        if let Some(m) = self.get(f) {
            let text = if m.value.len() == 16 {
                fmt_ipv6_masked(&m.value, &m.mask)
            } else if m.value.len() == 4 {
                fmt_ipv4_masked(&m.value, &m.mask)
            } else {
                fmt_hex(&m.value)
            };
            let _ = write!(out, "{name}={text},");
        }
    }

    /// `format_be16_masked()`: decimal when exact, `0x%x/0x%x` otherwise. Fields narrower
    /// than 16 bits (ICMP type/code) live in OVS's 16-bit `tp_src`/`tp_dst`, exact.
    fn put_tp(&self, out: &mut String, name: &str, f: Field) {
        if let Some(m) = self.get(f) {
            if m.is_exact() {
                let _ = write!(out, "{name}={},", m.exact_u());
            } else {
                let _ = write!(out, "{name}=0x{:x}/0x{:x},", m.exact_u(), to_u128(&m.mask));
            }
        }
    }

    fn put_vlan(&self, out: &mut String) {
        let (tci, mask) = self.vlan_tci;
        if mask == 0 {
            return;
        }
        let vid_mask = mask & 0x0fff;
        let pcp_mask = mask & 0xe000;
        let cfi = mask & 0x1000;
        if cfi != 0
            && tci & 0x1000 != 0
            && (vid_mask == 0 || vid_mask == 0x0fff)
            && (pcp_mask == 0 || pcp_mask == 0xe000)
            && (vid_mask != 0 || pcp_mask != 0)
        {
            if vid_mask != 0 {
                let _ = write!(out, "dl_vlan={},", tci & 0x0fff);
            }
            if pcp_mask != 0 {
                let _ = write!(out, "dl_vlan_pcp={},", tci >> 13);
            }
        } else if mask == 0xffff {
            let _ = write!(out, "vlan_tci=0x{tci:04x},");
        } else {
            let _ = write!(out, "vlan_tci=0x{tci:04x}/0x{mask:04x},");
        }
    }
}

/// C's `%#x`: `0x` prefix except for zero.
pub(crate) fn hash_x(v: u128) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("0x{v:x}")
    }
}

/// `format_uint32_masked()` / `format_be64_masked()`: `%#x` value, `/%#x` mask.
fn put_u32_masked(out: &mut String, name: &str, m: &Masked) {
    let _ = write!(out, "{name}={}", hash_x(m.exact_u()));
    if !m.is_exact() {
        let _ = write!(out, "/{}", hash_x(to_u128(&m.mask)));
    }
    out.push(',');
}

/// `format_uint16_masked()`: decimal when exact, `0x%x/0x%x` otherwise.
fn put_uint_masked(out: &mut String, name: &str, m: &Masked) {
    if m.is_exact() {
        let _ = write!(out, "{name}={},", m.exact_u());
    } else {
        let _ = write!(out, "{name}=0x{:x}/0x{:x},", m.exact_u(), to_u128(&m.mask));
    }
}

/// OpenFlow 1.3 reserved port numbers and the names `ofputil_format_port()` prints.
pub(crate) const PORT_NAMES: &[(&str, u32)] = &[
    ("IN_PORT", 0xffff_fff8),
    ("TABLE", 0xffff_fff9),
    ("NORMAL", 0xffff_fffa),
    ("FLOOD", 0xffff_fffb),
    ("ALL", 0xffff_fffc),
    ("CONTROLLER", 0xffff_fffd),
    ("LOCAL", 0xffff_fffe),
    ("ANY", 0xffff_ffff),
];

/// `ofputil_format_port()` for an OpenFlow 1.3 (32-bit) port number.
pub(crate) fn fmt_port(port: u32) -> String {
    PORT_NAMES
        .iter()
        .find(|(_, p)| *p == port)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| port.to_string())
}

/// Parses a port as `ofputil_port_from_string()` does: a number, an OpenFlow 1.0 style
/// 16-bit reserved number (0xfff8-0xffff, mapped to its 1.3 value), or a reserved name.
pub(crate) fn parse_port(s: &str) -> Result<u32, String> {
    if let Some((_, p)) = PORT_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(*p);
    }
    if s.eq_ignore_ascii_case("NONE") {
        return Ok(0xffff_ffff);
    }
    let v = value::parse_uint(s, 32).map_err(|e| format!("{s:?} is not a port: {e}"))? as u32;
    // OVS keeps 16-bit port numbers internally: 0xff00-0xffff are the 1.0 reserved range.
    if (0xff00..=0xffff).contains(&v) {
        return Ok(v | 0xffff_0000);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = (Field, Vec<u8>, Option<Vec<u8>>);

    fn fmt(items: &[Item], prio: u16) -> String {
        let view = MatchView::new(
            items
                .iter()
                .map(|(f, v, m)| (*f, v.as_slice(), m.as_deref())),
        );
        let mut s = String::new();
        view.format(&mut s, prio);
        s
    }

    #[test]
    fn protocol_folding_and_order() {
        let s = fmt(
            &[
                (Field::EthType, vec![0x08, 0x00], None),
                (Field::IpProto, vec![6], None),
                (Field::TcpDst, vec![0, 80], None),
                (Field::Reg(0), vec![0, 0, 0, 1], Some(vec![0, 0, 0, 0xf])),
                (
                    Field::CtState,
                    vec![0, 0, 0, 0x22],
                    Some(vec![0, 0, 0, 0x32]),
                ),
            ],
            100,
        );
        assert_eq!(
            s,
            "priority=100,ct_state=+est-inv+trk,tcp,reg0=0x1/0xf,tp_dst=80"
        );
    }

    #[test]
    fn vlan_forms() {
        let s = fmt(
            &[(Field::VlanVid, vec![0x10, 0x05], None)],
            DEFAULT_PRIORITY,
        );
        assert_eq!(s, "dl_vlan=5");
        let s = fmt(&[(Field::VlanVid, vec![0, 0], None)], DEFAULT_PRIORITY);
        assert_eq!(s, "vlan_tci=0x0000/0x1fff");
        let s = fmt(
            &[(Field::VlanVid, vec![0x10, 0], Some(vec![0x10, 0]))],
            DEFAULT_PRIORITY,
        );
        assert_eq!(s, "vlan_tci=0x1000/0x1000");
    }

    #[test]
    fn xreg_splits_into_regs() {
        let s = fmt(&[(Field::XReg(1), vec![0, 0, 0, 0, 0, 0, 0, 5], None)], 1);
        assert_eq!(s, "priority=1,reg2=0,reg3=0x5");
    }
}
