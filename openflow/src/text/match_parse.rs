//! Parsing the match part of a flow (`ip,nw_src=10.0.0.0/24,reg0=0x1/0xf,...`) into a
//! [`Match`], folding OVS's legacy spellings (`dl_vlan`, `nw_tos`, `vlan_tci`, `tp_src`,
//! `xreg`) into the OXM fields OVS itself sends in OpenFlow 1.3 (lib/nx-match.c
//! `nx_put_raw`), so that a parsed flow and the same flow read back from the switch are
//! equal.

use bytes::Bytes;

use super::fields::{Subfield, parse_value};
use super::value::{from_u128, parse_uint, to_u128};
use crate::field::Field;
use crate::matching::{Match, MatchField};

/// The protocol shorthands `ofp_parse_protocol()` accepts: (name, eth_type, ip_proto).
const PROTOCOLS: &[(&str, u16, Option<u8>)] = &[
    ("ip", 0x0800, None),
    ("ipv4", 0x0800, None),
    ("icmp", 0x0800, Some(1)),
    ("igmp", 0x0800, Some(2)),
    ("tcp", 0x0800, Some(6)),
    ("udp", 0x0800, Some(17)),
    ("sctp", 0x0800, Some(132)),
    ("ipv6", 0x86dd, None),
    ("ip6", 0x86dd, None),
    ("icmp6", 0x86dd, Some(58)),
    ("icmpv6", 0x86dd, Some(58)),
    ("tcp6", 0x86dd, Some(6)),
    ("udp6", 0x86dd, Some(17)),
    ("sctp6", 0x86dd, Some(132)),
    ("arp", 0x0806, None),
    ("rarp", 0x8035, None),
];

/// Accumulates match criteria in the order they appear on the line.
#[derive(Debug, Default)]
pub(crate) struct MatchBuilder {
    fields: Vec<MatchField>,
    /// VLAN TCI (value, mask) from `dl_vlan`, `dl_vlan_pcp`, `vlan_tci`, `vlan_vid`,
    /// `vlan_pcp`; turned into OXM `vlan_vid`/`vlan_pcp` at the end as OVS does.
    tci: Option<(u16, u16)>,
}

impl MatchBuilder {
    fn exact(&self, f: Field) -> Option<u128> {
        self.fields
            .iter()
            .rev()
            .find(|m| m.field == f)
            .map(MatchField::value_u128)
    }

    fn push(&mut self, mf: MatchField) {
        self.fields.retain(|m| m.field != mf.field);
        self.fields.push(mf);
    }

    /// Tries to take `key` (with `value`) as a match item. Returns `Ok(false)` when `key`
    /// is not a match field or protocol (the caller then tries its own keywords).
    pub(crate) fn item(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if let Some(&(_, eth, proto)) = PROTOCOLS.iter().find(|(n, _, _)| *n == key) {
            if !value.is_empty() {
                return Err(format!("protocol {key} takes no value (got {value:?})"));
            }
            self.push(MatchField::u16(Field::EthType, eth));
            if let Some(p) = proto {
                self.push(MatchField::u8(Field::IpProto, p));
            }
            return Ok(true);
        }
        match key {
            "dl_vlan" => {
                let vid = parse_uint(value, 12).map_err(|e| format!("dl_vlan: {e}"))? as u16;
                let (v, m) = self.tci.unwrap_or((0, 0));
                self.tci = Some(((v & !0x1fff) | 0x1000 | vid, m | 0x1fff));
                return Ok(true);
            }
            "dl_vlan_pcp" | "vlan_pcp" => {
                let pcp = parse_uint(value, 3).map_err(|e| format!("{key}: {e}"))? as u16;
                let (v, m) = self.tci.unwrap_or((0, 0));
                self.tci = Some(((v & 0x1fff) | 0x1000 | (pcp << 13), m | 0xf000));
                return Ok(true);
            }
            "vlan_tci" => {
                let (v, m) =
                    parse_value(Field::Reg(0), value).map_err(|e| format!("vlan_tci: {e}"))?;
                let v = to_u128(&v);
                let m = m.map(|m| to_u128(&m)).unwrap_or(0xffff);
                if v > 0xffff || m > 0xffff {
                    return Err(format!("vlan_tci: {value} does not fit in 16 bits"));
                }
                let m = m as u16;
                self.tci = Some(((v as u16) & m, m));
                return Ok(true);
            }
            "vlan_vid" => {
                let (v, m) =
                    parse_value(Field::VlanVid, value).map_err(|e| format!("vlan_vid: {e}"))?;
                let v = to_u128(&v) as u16 & 0x1fff;
                let m = m.map(|m| to_u128(&m) as u16).unwrap_or(0x1fff) & 0x1fff;
                let (tv, tm) = self.tci.unwrap_or((0, 0));
                self.tci = Some(((tv & 0xe000) | (v & m), (tm & 0xe000) | m));
                return Ok(true);
            }
            "nw_tos" => {
                let tos = parse_uint(value, 8).map_err(|e| format!("nw_tos: {e}"))? as u8;
                self.push(MatchField::u8(Field::IpDscp, tos >> 2));
                return Ok(true);
            }
            "ip_dscp" => {
                let d = parse_uint(value, 6).map_err(|e| format!("ip_dscp: {e}"))? as u8;
                self.push(MatchField::u8(Field::IpDscp, d));
                return Ok(true);
            }
            "nw_frag" | "ip_frag" => {
                let (v, m): (u8, u8) = match value {
                    "no" => (0, 1),
                    "yes" => (1, 1),
                    "first" => (1, 3),
                    "later" => (3, 3),
                    "not_later" => (0, 2),
                    other => {
                        let (v, m) = parse_value(Field::IpFrag, other).map_err(|e| {
                            format!("{key}: {e} (expected no, yes, first, later or not_later)")
                        })?;
                        (to_u128(&v) as u8, m.map(|m| to_u128(&m) as u8).unwrap_or(3))
                    }
                };
                let mf = if m == 0xff {
                    MatchField::u8(Field::IpFrag, v)
                } else {
                    MatchField::masked(Field::IpFrag, vec![v & m], vec![m])
                };
                self.push(mf);
                return Ok(true);
            }
            _ => {}
        }
        let field = if key.contains('[') {
            return self.subfield_item(key, value).map(|()| true);
        } else {
            match Field::from_name(key) {
                Some(f) => f,
                None => return Ok(false),
            }
        };
        let field = self.resolve_alias(key, field);
        if value.is_empty() {
            return Err(format!("field {key} missing value"));
        }
        let (v, m) = parse_value(field, value).map_err(|e| format!("{key}: {e}"))?;
        match field {
            Field::XReg(i) => {
                let v = to_u128(&v) as u64;
                let mm = m.as_ref().map(|m| to_u128(m) as u64).unwrap_or(u64::MAX);
                let i = i * 2;
                self.push_reg(i, (v >> 32) as u32, (mm >> 32) as u32);
                self.push_reg(i + 1, v as u32, mm as u32);
            }
            Field::XXReg(i) => {
                let v = to_u128(&v);
                let mm = m.as_ref().map(|m| to_u128(m)).unwrap_or(u128::MAX);
                for k in 0..4u8 {
                    let shift = 96 - 32 * u32::from(k);
                    self.push_reg(i * 4 + k, (v >> shift) as u32, (mm >> shift) as u32);
                }
            }
            _ => self.push(MatchField {
                field,
                value: v,
                mask: m,
            }),
        }
        Ok(true)
    }

    fn push_reg(&mut self, i: u8, v: u32, m: u32) {
        if m == 0 {
            self.fields.retain(|f| f.field != Field::Reg(i));
        } else if m == u32::MAX {
            self.push(MatchField::u32(Field::Reg(i), v));
        } else {
            self.push(MatchField::u32_masked(Field::Reg(i), v & m, m));
        }
    }

    /// `tp_src`/`tp_dst` and `icmp_type`/`icmp_code` name whichever L4 field the protocol
    /// given so far implies (OVS `ofp_parse_field()` does the same).
    fn resolve_alias(&self, key: &str, field: Field) -> Field {
        let proto = self.exact(Field::IpProto);
        let eth = self.exact(Field::EthType);
        match (key, proto) {
            ("tp_src", Some(17)) => Field::UdpSrc,
            ("tp_dst", Some(17)) => Field::UdpDst,
            ("tp_src", Some(132)) => Field::SctpSrc,
            ("tp_dst", Some(132)) => Field::SctpDst,
            ("icmp_type", _) if eth == Some(0x86dd) => Field::Icmpv6Type,
            ("icmp_code", _) if eth == Some(0x86dd) => Field::Icmpv6Code,
            _ => field,
        }
    }

    /// `NXM_NX_REG0[0..3]=5`: sets those bits of the field (`parse_subfield()` in
    /// lib/ofp-flow.c).
    fn subfield_item(&mut self, key: &str, value: &str) -> Result<(), String> {
        let sf = Subfield::parse(key, false)?;
        let width = sf.field.width();
        if width > 16 || width == 0 {
            return Err(format!(
                "{key}: subfield matches on {} are not supported",
                sf.field
            ));
        }
        let v = super::value::parse_int(value, width).map_err(|e| format!("{key}: {e}"))?;
        let v = to_u128(&v);
        if sf.n_bits < 128 && v >> sf.n_bits != 0 {
            return Err(format!(
                "{key}: value {value} does not fit into {} bits",
                sf.n_bits
            ));
        }
        let bits = if sf.n_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << sf.n_bits) - 1
        };
        let (old_v, old_m) = self
            .fields
            .iter()
            .find(|m| m.field == sf.field)
            .map(|m| (m.value_u128(), m.mask_u128()))
            .unwrap_or((0, 0));
        let m = old_m | (bits << sf.ofs);
        let nv = (old_v & !(bits << sf.ofs)) | (v << sf.ofs);
        self.push(MatchField::masked(
            sf.field,
            Bytes::from(from_u128(nv & m, width)),
            Bytes::from(from_u128(m, width)),
        ));
        Ok(())
    }

    /// The finished match, validated (widths, masks, prerequisites).
    pub(crate) fn finish(mut self) -> Result<Match, String> {
        if let Some((tci, mask)) = self.tci.take() {
            // nx_put_raw(): vlan_vid carries VID+CFI, vlan_pcp only when tagged.
            let vid = tci & 0x1fff;
            let vid_mask = mask & 0x1fff;
            if vid_mask == 0x1fff {
                self.push(MatchField::u16(Field::VlanVid, vid));
            } else if vid_mask != 0 {
                self.push(MatchField::u16_masked(
                    Field::VlanVid,
                    vid & vid_mask,
                    vid_mask,
                ));
            }
            if vid != 0 && mask & 0xe000 != 0 {
                self.push(MatchField::u8(Field::VlanPcp, (tci >> 13) as u8));
            }
        }
        let mut m = Match::new();
        for mf in self.fields {
            let name = mf.field;
            m.insert(mf).map_err(|e| format!("{name}: {e}"))?;
        }
        m.check_prerequisites().map_err(|e| e.to_string())?;
        Ok(m)
    }
}
