//! Flow matches: [`MatchField`] (one OXM TLV: field, value, optional mask) and [`Match`]
//! (a set of them with canonical, order-independent equality), plus the `ofp_match`
//! (OFPMT_OXM) codec and the prerequisite check of OpenFlow 1.3 §7.2.3.6.
//!
//! Values are normalised the way ovs-vswitchd normalises them, so that what we send and
//! what a flow dump gives back compare equal: an all-ones mask is no mask, an all-zero
//! mask removes the field, and value bits outside the mask are cleared.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::field::{Field, OXM_CLASS_EXPERIMENTER, OxmHeader, Prerequisite, TUN_METADATA_MAX_LEN};
use crate::wire::{Reader, pad8, patch_len16, put_zeros};
use crate::{Error, Result};

/// OFPMT_OXM: the only match type OpenFlow 1.3 uses.
const OFPMT_OXM: u16 = 1;

/// One match criterion or `set_field` operand: a field, its big-endian value (exactly the
/// field's width) and an optional mask of the same width.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchField {
    /// The field.
    pub field: Field,
    /// Big-endian value, `field.width()` bytes (1-124 for `tun_metadata`).
    pub value: Bytes,
    /// Big-endian mask, same width as the value; `None` means exact match.
    pub mask: Option<Bytes>,
}

fn be_tail(v: u128, width: usize) -> Bytes {
    let all = v.to_be_bytes();
    Bytes::copy_from_slice(&all[16 - width.min(16)..])
}

impl MatchField {
    /// An exact match on raw big-endian bytes.
    pub fn exact(field: Field, value: impl Into<Bytes>) -> MatchField {
        MatchField {
            field,
            value: value.into(),
            mask: None,
        }
    }

    /// A masked match on raw big-endian bytes.
    pub fn masked(field: Field, value: impl Into<Bytes>, mask: impl Into<Bytes>) -> MatchField {
        MatchField {
            field,
            value: value.into(),
            mask: Some(mask.into()),
        }
    }

    /// An exact match on an integer, written in the field's width (`Field::width()` bytes,
    /// the integer's low-order bytes). Works for every fixed-width field up to 128 bits.
    pub fn int(field: Field, value: u128) -> MatchField {
        MatchField::exact(field, be_tail(value, field.width()))
    }

    /// A masked match on an integer (see [`MatchField::int`]).
    pub fn int_masked(field: Field, value: u128, mask: u128) -> MatchField {
        let w = field.width();
        MatchField::masked(field, be_tail(value, w), be_tail(mask, w))
    }

    /// An exact 8-bit value (`ip_proto`, `icmp_type`, `nw_ttl`...).
    pub fn u8(field: Field, value: u8) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&[value]))
    }

    /// An exact 16-bit value (`eth_type`, `tcp_dst`, `ct_zone`...).
    pub fn u16(field: Field, value: u16) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    /// A masked 16-bit value.
    pub fn u16_masked(field: Field, value: u16, mask: u16) -> MatchField {
        MatchField::masked(
            field,
            Bytes::copy_from_slice(&value.to_be_bytes()),
            Bytes::copy_from_slice(&mask.to_be_bytes()),
        )
    }

    /// An exact 32-bit value (`in_port`, `reg<N>`, `ct_mark`, `conj_id`...).
    pub fn u32(field: Field, value: u32) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    /// A masked 32-bit value (`reg0=0x1/0xff`, `ct_state=+trk-inv`...).
    pub fn u32_masked(field: Field, value: u32, mask: u32) -> MatchField {
        MatchField::masked(
            field,
            Bytes::copy_from_slice(&value.to_be_bytes()),
            Bytes::copy_from_slice(&mask.to_be_bytes()),
        )
    }

    /// An exact 64-bit value (`metadata`, `tun_id`, `xreg<N>`).
    pub fn u64(field: Field, value: u64) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    /// A masked 64-bit value.
    pub fn u64_masked(field: Field, value: u64, mask: u64) -> MatchField {
        MatchField::masked(
            field,
            Bytes::copy_from_slice(&value.to_be_bytes()),
            Bytes::copy_from_slice(&mask.to_be_bytes()),
        )
    }

    /// An exact MAC address (`eth_src`, `eth_dst`, `arp_sha`...).
    pub fn mac(field: Field, mac: [u8; 6]) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&mac))
    }

    /// A masked MAC address (`eth_dst=01:00:00:00:00:00/01:00:00:00:00:00`).
    pub fn mac_masked(field: Field, mac: [u8; 6], mask: [u8; 6]) -> MatchField {
        MatchField::masked(
            field,
            Bytes::copy_from_slice(&mac),
            Bytes::copy_from_slice(&mask),
        )
    }

    /// An exact IPv4 address (`ip_src`, `arp_tpa`, `tun_dst`, `ct_nw_dst`...).
    pub fn ipv4(field: Field, addr: Ipv4Addr) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&addr.octets()))
    }

    /// An IPv4 CIDR prefix (`ip_dst=10.1.0.0/16`); a prefix of 32 is an exact match.
    pub fn ipv4_prefix(field: Field, addr: Ipv4Addr, prefix_len: u8) -> MatchField {
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len.min(32)))
        };
        MatchField::u32_masked(field, u32::from(addr), mask)
    }

    /// An exact IPv6 address.
    pub fn ipv6(field: Field, addr: Ipv6Addr) -> MatchField {
        MatchField::exact(field, Bytes::copy_from_slice(&addr.octets()))
    }

    /// An IPv6 CIDR prefix; a prefix of 128 is an exact match.
    pub fn ipv6_prefix(field: Field, addr: Ipv6Addr, prefix_len: u8) -> MatchField {
        let mask = if prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix_len.min(128)))
        };
        MatchField::masked(
            field,
            Bytes::copy_from_slice(&(u128::from(addr) & mask).to_be_bytes()),
            Bytes::copy_from_slice(&mask.to_be_bytes()),
        )
    }

    /// The value as an unsigned integer (fields up to 16 bytes; longer values give their
    /// low 16 bytes).
    pub fn value_u128(&self) -> u128 {
        bytes_to_u128(&self.value)
    }

    /// The mask as an integer; all ones of the field's width when there is no mask.
    pub fn mask_u128(&self) -> u128 {
        match &self.mask {
            Some(m) => bytes_to_u128(m),
            None => {
                let bits = 8 * self.value.len().min(16);
                if bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << bits) - 1
                }
            }
        }
    }

    /// Whether a packet whose value of this field is `value` (big-endian, as an integer)
    /// matches: `value & mask == self.value & mask`. For fields up to 128 bits (longer
    /// `tun_metadata` compares its low 16 bytes only).
    pub fn matches_value(&self, value: u128) -> bool {
        let mask = self.mask_u128();
        value & mask == self.value_u128() & mask
    }

    /// Checks the value and mask widths and maskability, and returns the canonical form
    /// (value cleared outside the mask, all-ones mask dropped); `None` if the mask is
    /// all zeros (the field matches anything).
    pub fn normalized(mut self) -> Result<Option<MatchField>> {
        let field = self.field;
        if !field.is_valid() {
            return Err(Error::bad_value(
                "match field",
                format!("{field:?} does not exist"),
            ));
        }
        let width = field.width();
        let vlen = self.value.len();
        if field.is_variable_width() {
            let max = if matches!(field, Field::TunMetadata(_)) {
                TUN_METADATA_MAX_LEN
            } else {
                u8::MAX as usize / 2
            };
            if vlen == 0 || vlen > max {
                return Err(Error::BadFieldWidth {
                    field,
                    what: "value",
                    got: vlen,
                    expected: max,
                });
            }
        } else if vlen != width {
            return Err(Error::BadFieldWidth {
                field,
                what: "value",
                got: vlen,
                expected: width,
            });
        }
        if let Some(mask) = self.mask.take() {
            if mask.len() != vlen {
                return Err(Error::BadFieldWidth {
                    field,
                    what: "mask",
                    got: mask.len(),
                    expected: vlen,
                });
            }
            if mask.iter().all(|&b| b == 0xff) {
                // An all-ones mask is an exact match; OVS sends it without a mask.
            } else if mask.iter().all(|&b| b == 0) {
                return Ok(None);
            } else {
                if !field.is_maskable() {
                    return Err(Error::NotMaskable { field });
                }
                if self.value.iter().zip(mask.iter()).any(|(v, m)| v & !m != 0) {
                    let v: Vec<u8> = self
                        .value
                        .iter()
                        .zip(mask.iter())
                        .map(|(v, m)| v & m)
                        .collect();
                    self.value = Bytes::from(v);
                }
                self.mask = Some(mask);
            }
        }
        Ok(Some(self))
    }

    /// Bytes of the TLV on the wire (header, experimenter id, value, mask).
    pub fn wire_len(&self) -> usize {
        let h = self.field.oxm_header();
        h.wire_len() + self.value.len() + self.mask.as_ref().map_or(0, |m| m.len())
    }

    /// Appends the OXM TLV with the OpenFlow 1.3 header for the field.
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        self.encode_with(self.field.oxm_header(), out)
    }

    pub(crate) fn encode_with(&self, h: OxmHeader, out: &mut BytesMut) -> Result<()> {
        let payload = self.value.len() + self.mask.as_ref().map_or(0, |m| m.len());
        let total = payload + if h.experimenter.is_some() { 4 } else { 0 };
        if total > 255 {
            return Err(Error::TooLong {
                what: "OXM field",
                length: total,
                max: 255,
            });
        }
        out.put_u32(h.word(self.mask.is_some(), payload));
        if let Some(e) = h.experimenter {
            out.put_u32(e);
        }
        out.put_slice(&self.value);
        if let Some(m) = &self.mask {
            out.put_slice(m);
        }
        Ok(())
    }

    /// Reads one OXM TLV. Widths are checked against the field when it is known; the
    /// result is not normalised (use [`MatchField::normalized`]).
    pub(crate) fn decode(r: &mut Reader) -> Result<MatchField> {
        let word = r.u32("OXM header")?;
        let class = (word >> 16) as u16;
        let field_no = ((word >> 9) & 0x7f) as u8;
        let has_mask = word & 0x100 != 0;
        let mut len = (word & 0xff) as usize;
        let experimenter = if class == OXM_CLASS_EXPERIMENTER {
            if len < 4 {
                return Err(Error::BadLength {
                    what: "experimenter OXM field",
                    length: len,
                    reason: "shorter than its 4-byte experimenter id",
                });
            }
            len -= 4;
            Some(r.u32("OXM experimenter id")?)
        } else {
            None
        };
        let field = Field::from_header(OxmHeader {
            class,
            field: field_no,
            experimenter,
        });
        let vlen = if has_mask {
            if !len.is_multiple_of(2) {
                return Err(Error::BadLength {
                    what: "masked OXM field",
                    length: len,
                    reason: "odd payload length cannot hold value and mask",
                });
            }
            len / 2
        } else {
            len
        };
        if !field.is_variable_width() && vlen != field.width() {
            return Err(Error::BadFieldWidth {
                field,
                what: "value",
                got: vlen,
                expected: field.width(),
            });
        }
        let value = r.bytes("OXM value", vlen)?;
        let mask = if has_mask {
            Some(r.bytes("OXM mask", vlen)?)
        } else {
            None
        };
        Ok(MatchField { field, value, mask })
    }
}

fn bytes_to_u128(b: &[u8]) -> u128 {
    let tail = &b[b.len().saturating_sub(16)..];
    tail.iter()
        .fold(0u128, |acc, &x| (acc << 8) | u128::from(x))
}

/// A flow match: at most one [`MatchField`] per [`Field`], kept sorted by field so that
/// equality does not depend on insertion order and encoding follows OVS's field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    fields: BTreeMap<Field, MatchField>,
}

impl Match {
    /// The empty match (matches every packet).
    pub fn new() -> Match {
        Match::default()
    }

    /// Adds (or replaces) a field after validating and normalising it. A field whose mask
    /// is all zeros is removed instead (it would match anything).
    pub fn insert(&mut self, mf: MatchField) -> Result<&mut Match> {
        let field = mf.field;
        match mf.normalized()? {
            Some(mf) => {
                self.fields.insert(field, mf);
            }
            None => {
                self.fields.remove(&field);
            }
        }
        Ok(self)
    }

    /// Builder form of [`Match::insert`].
    pub fn with(mut self, mf: MatchField) -> Result<Match> {
        self.insert(mf)?;
        Ok(self)
    }

    /// The criterion on `field`, if any.
    pub fn get(&self, field: Field) -> Option<&MatchField> {
        self.fields.get(&field)
    }

    /// Removes and returns the criterion on `field`.
    pub fn remove(&mut self, field: Field) -> Option<MatchField> {
        self.fields.remove(&field)
    }

    /// Criteria in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &MatchField> {
        self.fields.values()
    }

    /// Number of criteria.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True for the match-everything match.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn exact_value(&self, field: Field) -> Option<u128> {
        self.fields
            .get(&field)
            .filter(|mf| mf.mask.is_none())
            .map(|mf| mf.value_u128())
    }

    fn satisfies(&self, p: Prerequisite) -> bool {
        let eth = self.exact_value(Field::EthType);
        let proto = self.exact_value(Field::IpProto);
        let ip_any = matches!(eth, Some(0x0800) | Some(0x86dd));
        match p {
            Prerequisite::None => true,
            Prerequisite::InPort => self.fields.contains_key(&Field::InPort),
            Prerequisite::Arp => matches!(eth, Some(0x0806) | Some(0x8035)),
            Prerequisite::Ct => self
                .fields
                .get(&Field::CtState)
                .is_some_and(|mf| mf.value_u128() & 0x20 != 0),
            Prerequisite::VlanVid => self
                .fields
                .get(&Field::VlanVid)
                .is_some_and(|mf| mf.value_u128() & 0x1000 != 0),
            Prerequisite::Ipv4 => eth == Some(0x0800),
            Prerequisite::Ipv6 => eth == Some(0x86dd),
            Prerequisite::IpAny => ip_any,
            Prerequisite::Tcp => ip_any && proto == Some(6),
            Prerequisite::Udp => ip_any && proto == Some(17),
            Prerequisite::Sctp => ip_any && proto == Some(132),
            Prerequisite::Icmpv4 => eth == Some(0x0800) && proto == Some(1),
            Prerequisite::Icmpv6 => eth == Some(0x86dd) && proto == Some(58),
            Prerequisite::Nd | Prerequisite::NdSolicit | Prerequisite::NdAdvert => {
                let t = self.exact_value(Field::Icmpv6Type);
                self.satisfies(Prerequisite::Icmpv6)
                    && match p {
                        Prerequisite::NdSolicit => t == Some(135),
                        Prerequisite::NdAdvert => t == Some(136),
                        _ => matches!(t, Some(135) | Some(136)),
                    }
            }
        }
    }

    /// Whether a packet matches: every criterion holds for the packet's value of its field,
    /// which `value_of` gives (a field the packet lacks, such as `tcp_dst` of an ARP packet,
    /// is 0, as in OVS's `struct flow`). Evaluates the match as a flow table does; the
    /// prerequisites in the match (`ip_proto=6` before `tcp_dst`) keep absent fields from
    /// matching by accident.
    pub fn matches(&self, value_of: impl Fn(Field) -> u128) -> bool {
        self.fields
            .values()
            .all(|mf| mf.matches_value(value_of(mf.field)))
    }

    /// Checks that every field's prerequisites are present (e.g. `tcp_dst` needs
    /// `eth_type=0x0800/0x86dd` and `ip_proto=6`); the error names the first field that
    /// lacks one and what it lacks.
    pub fn check_prerequisites(&self) -> Result<()> {
        for field in self.fields.keys() {
            let p = field.prerequisite();
            if !self.satisfies(p) {
                return Err(Error::MissingPrerequisite {
                    field: *field,
                    missing: p,
                });
            }
        }
        Ok(())
    }

    /// Appends an `ofp_match` (type OFPMT_OXM, length, fields, zero padding to 8 bytes).
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u16(OFPMT_OXM);
        out.put_u16(0);
        for mf in self.fields.values() {
            mf.encode(out)?;
        }
        let len = out.len() - start;
        patch_len16(out, start + 2, len, "ofp_match")?;
        put_zeros(out, pad8(len));
        Ok(())
    }

    /// Bytes the encoded `ofp_match` occupies, padding included.
    pub fn wire_len(&self) -> usize {
        let len = 4 + self
            .fields
            .values()
            .map(MatchField::wire_len)
            .sum::<usize>();
        len + pad8(len)
    }

    /// The encoded `ofp_match` ([`Match::encode`]) as bytes: a compact, canonical key for
    /// a match (equal matches encode equally: fields are normalised and kept in order).
    pub fn to_wire(&self) -> Result<Bytes> {
        let mut out = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes bytes written by [`Match::to_wire`] (or any `ofp_match`, padding included).
    pub fn from_wire(bytes: &[u8]) -> Result<Match> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes));
        Match::decode(&mut r)
    }

    /// Reads an `ofp_match` including its padding.
    pub(crate) fn decode(r: &mut Reader) -> Result<Match> {
        let mtype = r.u16("ofp_match type")?;
        let len = r.u16("ofp_match length")? as usize;
        if mtype != OFPMT_OXM {
            return Err(Error::bad_value(
                "ofp_match type",
                format!("{mtype} (only OFPMT_OXM=1 is used by OpenFlow 1.3)"),
            ));
        }
        if len < 4 {
            return Err(Error::BadLength {
                what: "ofp_match",
                length: len,
                reason: "shorter than its 4-byte header",
            });
        }
        let mut body = r.sub("ofp_match fields", len - 4)?;
        r.skip("ofp_match padding", pad8(len))?;
        let mut m = Match::new();
        while !body.is_empty() {
            let mf = MatchField::decode(&mut body)?;
            let field = mf.field;
            if m.fields.contains_key(&field) {
                return Err(Error::bad_value(
                    "ofp_match",
                    format!("field {field} appears twice"),
                ));
            }
            if let Some(mf) = mf.normalized()? {
                m.fields.insert(field, mf);
            }
        }
        Ok(m)
    }
}

impl FromIterator<MatchField> for Result<Match> {
    fn from_iter<I: IntoIterator<Item = MatchField>>(iter: I) -> Self {
        let mut m = Match::new();
        for mf in iter {
            m.insert(mf)?;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_ignores_insertion_order_and_normalises() {
        let a = Match::new()
            .with(MatchField::u16(Field::EthType, 0x0800))
            .unwrap()
            .with(MatchField::ipv4_prefix(
                Field::Ipv4Dst,
                Ipv4Addr::new(10, 1, 2, 3),
                16,
            ))
            .unwrap();
        let b = Match::new()
            .with(MatchField::ipv4_prefix(
                Field::Ipv4Dst,
                Ipv4Addr::new(10, 1, 0, 0),
                16,
            ))
            .unwrap()
            .with(MatchField::u16_masked(Field::EthType, 0x0800, 0xffff))
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn prerequisites_name_field_and_missing() {
        let m = Match::new()
            .with(MatchField::u16(Field::EthType, 0x0800))
            .unwrap()
            .with(MatchField::u16(Field::TcpDst, 80))
            .unwrap();
        let e = m.check_prerequisites().unwrap_err();
        assert!(matches!(
            e,
            Error::MissingPrerequisite {
                field: Field::TcpDst,
                missing: Prerequisite::Tcp
            }
        ));
        assert!(e.to_string().contains("tcp_dst"), "{e}");
    }

    #[test]
    fn matches_evaluates_masks_and_absent_fields() {
        let m = Match::new()
            .with(MatchField::u16(Field::EthType, 0x0800))
            .unwrap()
            .with(MatchField::ipv4_prefix(
                Field::Ipv4Dst,
                Ipv4Addr::new(10, 244, 2, 0),
                24,
            ))
            .unwrap()
            .with(MatchField::u32_masked(Field::CtState, 0x21, 0x21))
            .unwrap();
        let packet = |dst: [u8; 4], ct: u128| {
            move |f: Field| match f {
                Field::EthType => 0x0800,
                Field::Ipv4Dst => u128::from(u32::from(Ipv4Addr::from(dst))),
                Field::CtState => ct,
                _ => 0,
            }
        };
        assert!(m.matches(packet([10, 244, 2, 7], 0x21)));
        assert!(
            m.matches(packet([10, 244, 2, 200], 0x23)),
            "bits outside the mask"
        );
        assert!(
            !m.matches(packet([10, 244, 3, 7], 0x21)),
            "outside the prefix"
        );
        assert!(!m.matches(packet([10, 244, 2, 7], 0x01)), "untracked");
        assert!(
            Match::new().matches(|_| 0),
            "the empty match matches everything"
        );
        let tcp = Match::new()
            .with(MatchField::u8(Field::IpProto, 6))
            .unwrap()
            .with(MatchField::u16(Field::TcpDst, 0))
            .unwrap();
        assert!(!tcp.matches(|_| 0), "an absent ip_proto is 0, not 6");
    }

    #[test]
    fn non_maskable_field_rejects_mask() {
        let e = Match::new()
            .with(MatchField::u16_masked(Field::EthType, 0x0800, 0xff00))
            .unwrap_err();
        assert!(matches!(
            e,
            Error::NotMaskable {
                field: Field::EthType
            }
        ));
    }
}
