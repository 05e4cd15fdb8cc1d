//! How each match field's value is written in `ovs-ofctl` text (`mf_parse()` /
//! `mf_format()` in OVS lib/meta-flow.c), and subfield references such as
//! `NXM_NX_REG0[0..15]`.

use bytes::Bytes;

use super::match_fmt::{fmt_port, parse_port};
use super::value::{
    self, CT_STATE_FLAGS, Syntax, TCP_FLAGS, TUN_FLAGS, fmt_eth_masked, fmt_flags_masked, fmt_hex,
    fmt_int, fmt_ipv4_masked, fmt_ipv6_masked, parse_eth_masked, parse_flags, parse_int,
    parse_ipv4_masked, parse_ipv6_masked, to_u128,
};
use crate::field::Field;

/// The text syntax of a field's values (`mf->string` in OVS).
pub(crate) fn syntax(f: Field) -> Syntax {
    use Field::*;
    match f {
        InPort | InPhyPort => Syntax::Port,
        EthSrc | EthDst | ArpSha | ArpTha | NdSll | NdTll => Syntax::Ethernet,
        Ipv4Src | Ipv4Dst | ArpSpa | ArpTpa | TunSrc | TunDst | CtNwSrc | CtNwDst => Syntax::Ipv4,
        Ipv6Src | Ipv6Dst | NdTarget | TunIpv6Src | TunIpv6Dst | CtIpv6Src | CtIpv6Dst => {
            Syntax::Ipv6
        }
        VlanVid | VlanPcp | IpDscp | IpEcn | IpTtl | IpProto | TcpSrc | TcpDst | UdpSrc
        | UdpDst | SctpSrc | SctpDst | Icmpv4Type | Icmpv4Code | Icmpv6Type | Icmpv6Code
        | ArpOp | CtZone | CtNwProto | CtTpSrc | CtTpDst | ConjId => Syntax::Decimal,
        CtState => Syntax::CtState,
        TcpFlags => Syntax::TcpFlags,
        TunFlags => Syntax::TunFlags,
        _ => Syntax::Hex,
    }
}

/// Value width used when parsing text for `f` (variable-width fields get their largest
/// common size: 4 bytes for unknown fields, 124 for tunnel metadata trimmed afterwards).
fn text_width(f: Field) -> usize {
    match f.width() {
        0 => 4,
        w => w,
    }
}

fn bytes(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// Parses `VALUE` or `VALUE/MASK` for field `f`. Errors name neither the field nor the line
/// (the caller adds both).
pub(crate) fn parse_value(f: Field, s: &str) -> Result<(Bytes, Option<Bytes>), String> {
    let width = text_width(f);
    match syntax(f) {
        Syntax::Ipv4 => {
            let (a, m) = parse_ipv4_masked(s)?;
            Ok((bytes(&a), m.map(|m| bytes(&m))))
        }
        Syntax::Ipv6 => {
            let (a, m) = parse_ipv6_masked(s)?;
            Ok((bytes(&a), m.map(|m| bytes(&m))))
        }
        Syntax::Ethernet => {
            let (a, m) = parse_eth_masked(s)?;
            Ok((bytes(&a), m.map(|m| bytes(&m))))
        }
        Syntax::Port => {
            let p = parse_port(s)?;
            Ok((bytes(&p.to_be_bytes()), None))
        }
        Syntax::CtState | Syntax::TcpFlags | Syntax::TunFlags => {
            let (table, max): (&[(&str, u32)], u32) = match syntax(f) {
                Syntax::CtState => (CT_STATE_FLAGS, 0xff),
                Syntax::TcpFlags => (TCP_FLAGS, 0xfff),
                _ => (TUN_FLAGS, 0x1),
            };
            let (v, m) = parse_flags(s, table, max)?;
            let v = value::from_u128(u128::from(v), width);
            // `+a-b` and `V/M` select some bits; names joined by `|` or a bare number
            // give the whole value.
            let masked = s.starts_with(['+', '-']) || s.contains('/');
            let m = masked.then(|| bytes(&value::from_u128(u128::from(m), width)));
            Ok((Bytes::from(v), m))
        }
        Syntax::Decimal | Syntax::Hex => {
            let (v, m) = match s.split_once('/') {
                Some((v, m)) => (v, Some(m)),
                None => (s, None),
            };
            let value = parse_int(v, width)?;
            let mask = m.map(|m| parse_int(m, width)).transpose()?;
            if matches!(f, Field::TunMetadata(_)) {
                // Variable width: keep the significant bytes only (at least one).
                let keep = value
                    .iter()
                    .position(|&b| b != 0)
                    .map(|i| width - i)
                    .unwrap_or(1)
                    .max(
                        mask.as_ref()
                            .and_then(|m| m.iter().position(|&b| b != 0))
                            .map(|i| width - i)
                            .unwrap_or(1),
                    );
                let value = bytes(&value[width - keep..]);
                let mask = mask.map(|m| bytes(&m[width - keep..]));
                return Ok((value, mask));
            }
            Ok((Bytes::from(value), mask.map(Bytes::from)))
        }
    }
}

/// `mf_format()`: the value (and `/mask` when given) as `set_field` prints it.
pub(crate) fn format_value(f: Field, value: &[u8], mask: Option<&[u8]>) -> String {
    match syntax(f) {
        Syntax::Ipv4 if value.len() == 4 => fmt_ipv4_masked(value, mask.unwrap_or(&[0xff; 4])),
        Syntax::Ipv6 if value.len() == 16 => fmt_ipv6_masked(value, mask.unwrap_or(&[0xff; 16])),
        Syntax::Ethernet if value.len() == 6 => fmt_eth_masked(value, mask.unwrap_or(&[0xff; 6])),
        Syntax::Port => fmt_port(to_u128(value) as u32),
        Syntax::CtState | Syntax::TcpFlags | Syntax::TunFlags => {
            let (table, max): (&'static [(&'static str, u32)], u32) = match syntax(f) {
                Syntax::CtState => (CT_STATE_FLAGS, 0xff),
                Syntax::TcpFlags => (TCP_FLAGS, 0xfff),
                _ => (TUN_FLAGS, 0x1),
            };
            let v = to_u128(value) as u32;
            let m = mask.map(|m| to_u128(m) as u32).unwrap_or(max) & max;
            fmt_flags_masked(table, v, m, max)
        }
        s => {
            let mut out = fmt_int(s, value);
            if let Some(m) = mask {
                out.push('/');
                out.push_str(&fmt_hex(m));
            }
            out
        }
    }
}

/// A reference to bits of a field: `NXM_NX_REG0[0..15]`, `reg0[]`, `NXM_OF_ETH_DST[5]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subfield {
    /// The field.
    pub field: Field,
    /// Offset of the lowest bit.
    pub ofs: u16,
    /// Number of bits.
    pub n_bits: u16,
}

impl Subfield {
    /// Parses `NAME[]`, `NAME[i]`, `NAME[a..b]` (`mf_parse_subfield()`); a bare NAME means
    /// the whole field when `allow_bare` is set.
    pub(crate) fn parse(s: &str, allow_bare: bool) -> Result<Subfield, String> {
        let s = s.trim();
        let (name, range) = match s.find('[') {
            Some(i) => {
                let inner = s[i + 1..]
                    .strip_suffix(']')
                    .ok_or_else(|| format!("{s:?}: missing ] after the bit range"))?;
                (&s[..i], Some(inner))
            }
            None if allow_bare => (s, None),
            None => {
                return Err(format!(
                    "{s:?}: expected FIELD[], FIELD[BIT] or FIELD[START..END]"
                ));
            }
        };
        let field =
            Field::from_name(name).ok_or_else(|| format!("{name:?} is not a field OVS knows"))?;
        let total = field.nxm_bits() as u32;
        let (ofs, end) = match range {
            None | Some("") => (0u32, total.saturating_sub(1)),
            Some(r) => match r.split_once("..") {
                Some((a, b)) => (
                    a.parse()
                        .map_err(|_| format!("{s:?}: bad bit offset {a:?}"))?,
                    b.parse()
                        .map_err(|_| format!("{s:?}: bad bit offset {b:?}"))?,
                ),
                None => {
                    let b: u32 = r
                        .parse()
                        .map_err(|_| format!("{s:?}: bad bit offset {r:?}"))?;
                    (b, b)
                }
            },
        };
        if end < ofs {
            return Err(format!("{s:?}: bit range ends before it starts"));
        }
        if end >= total {
            return Err(format!(
                "{s:?}: bit {end} is beyond the {total}-bit field {name}"
            ));
        }
        Ok(Subfield {
            field,
            ofs: ofs as u16,
            n_bits: (end - ofs + 1) as u16,
        })
    }

    /// `mf_format_subfield()`: the NXM name and `[]`, `[i]` or `[a..b]`.
    #[cfg(test)]
    pub(crate) fn format(&self) -> String {
        let total = self.field.nxm_bits() as u16;
        let name = self.field.nxm_name();
        if self.ofs == 0 && self.n_bits == total {
            format!("{name}[]")
        } else if self.n_bits == 1 {
            format!("{name}[{}]", self.ofs)
        } else {
            format!("{name}[{}..{}]", self.ofs, self.ofs + self.n_bits - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subfields_round_trip() {
        for s in [
            "NXM_NX_REG0[0..15]",
            "NXM_OF_ETH_DST[]",
            "NXM_NX_REG2[5]",
            "OXM_OF_METADATA[]",
        ] {
            assert_eq!(Subfield::parse(s, false).unwrap().format(), s);
        }
        assert_eq!(
            Subfield::parse("reg0[]", false).unwrap().format(),
            "NXM_NX_REG0[]"
        );
        assert!(Subfield::parse("NXM_NX_REG0[0..32]", false).is_err());
        assert!(Subfield::parse("bogus[]", false).is_err());
    }

    #[test]
    fn values_like_mf_format() {
        let (v, m) = parse_value(Field::Reg(0), "0x5/0xff").unwrap();
        assert_eq!(format_value(Field::Reg(0), &v, m.as_deref()), "0x5/0xff");
        let (v, _) = parse_value(Field::VlanVid, "4106").unwrap();
        assert_eq!(format_value(Field::VlanVid, &v, None), "4106");
        let (v, _) = parse_value(Field::InPort, "LOCAL").unwrap();
        assert_eq!(format_value(Field::InPort, &v, None), "LOCAL");
        let (v, _) = parse_value(Field::CtLabel, "0x1").unwrap();
        assert_eq!(format_value(Field::CtLabel, &v, None), "0x1");
    }
}
