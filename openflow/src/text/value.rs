//! Values in `ovs-ofctl` text: integers of any width, IPv4/IPv6/Ethernet addresses with
//! masks, and flag sets (`+trk-inv`), parsed to and printed from big-endian bytes.
//!
//! The printing rules copy OVS: `ds_put_hex()` for hexadecimal fields (no leading zero
//! bytes, plain `0` for zero), `ip_format_masked()` (`/len` for CIDR masks, dotted mask
//! otherwise), `eth_format_masked()`, `format_flags()` / `format_flags_masked()`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How a field's value is written (`enum mf_string` in OVS include/openvswitch/meta-flow.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// Decimal integer (`tp_dst=80`).
    Decimal,
    /// Hexadecimal integer (`reg0=0x1`).
    Hex,
    /// Dotted quad.
    Ipv4,
    /// RFC 5952 text.
    Ipv6,
    /// `aa:bb:cc:dd:ee:ff`.
    Ethernet,
    /// An OpenFlow port number or name.
    Port,
    /// Connection-tracking state flags (`+trk+est`, `trk|est`).
    CtState,
    /// TCP flags (`+syn-ack`).
    TcpFlags,
    /// Tunnel flags (`+oam`).
    TunFlags,
}

/// Parses an unsigned integer written in decimal or `0x` hexadecimal (any length) into
/// `width` big-endian bytes. Errors say why, without the field name (the caller adds it).
pub(crate) fn parse_int(s: &str, width: usize) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty value".into());
    }
    let mut out = vec![0u8; width];
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let hex = hex.trim_start_matches('0');
        if hex.is_empty() {
            if s.len() > 2 {
                return Ok(out);
            }
            return Err(format!("{s:?} is not a hexadecimal number"));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a hexadecimal number"));
        }
        if hex.len() > width * 2 {
            return Err(format!("{s} does not fit in {} bits", width * 8));
        }
        for (i, c) in hex.bytes().rev().enumerate() {
            let nibble = (c as char).to_digit(16).unwrap_or(0) as u8;
            let byte = width - 1 - i / 2;
            out[byte] |= if i % 2 == 0 { nibble } else { nibble << 4 };
        }
        Ok(out)
    } else {
        let n: u128 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number (decimal or 0x hexadecimal)"))?;
        if width < 16 && n >> (width * 8) != 0 {
            return Err(format!("{s} does not fit in {} bits", width * 8));
        }
        let be = n.to_be_bytes();
        if width > 16 {
            out[width - 16..].copy_from_slice(&be);
        } else {
            out.copy_from_slice(&be[16 - width..]);
        }
        Ok(out)
    }
}

/// Parses an integer that must fit in a `u64`.
pub(crate) fn parse_u64(s: &str) -> Result<u64, String> {
    // strtoull() semantics, which ovs-ofctl relies on for `cookie=V/-1`: a leading minus
    // negates modulo 2^64.
    if let Some(rest) = s.trim().strip_prefix('-') {
        return parse_u64(rest).map(u64::wrapping_neg);
    }
    let b = parse_int(s, 8)?;
    Ok(u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Parses an integer that must fit in `bits` bits.
pub(crate) fn parse_uint(s: &str, bits: u32) -> Result<u64, String> {
    let v = parse_u64(s)?;
    if bits < 64 && v >> bits != 0 {
        return Err(format!("{s} does not fit in {bits} bits"));
    }
    Ok(v)
}

/// Big-endian bytes to a u128 (fields of at most 16 bytes).
pub(crate) fn to_u128(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x))
}

/// `value` as `width` big-endian bytes (truncating high bytes).
pub(crate) fn from_u128(value: u128, width: usize) -> Vec<u8> {
    let be = value.to_be_bytes();
    if width >= 16 {
        let mut v = vec![0u8; width - 16];
        v.extend_from_slice(&be);
        v
    } else {
        be[16 - width..].to_vec()
    }
}

/// `ds_put_hex()`: `0x` followed by the bytes without leading zeros, or `0`.
pub(crate) fn fmt_hex(b: &[u8]) -> String {
    let mut s = String::new();
    let mut printed = false;
    for &x in b {
        if x != 0 || printed {
            if printed {
                let _ = write!(s, "{x:02x}");
            } else {
                let _ = write!(s, "0x{x:x}");
            }
            printed = true;
        }
    }
    if !printed {
        s.push('0');
    }
    s
}

/// Formats an integer the way `mf_format()` does for its syntax.
pub(crate) fn fmt_int(syntax: Syntax, b: &[u8]) -> String {
    match syntax {
        Syntax::Decimal if b.len() <= 16 => to_u128(b).to_string(),
        _ => fmt_hex(b),
    }
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_ipv6(s: &str) -> Result<Ipv6Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv6 address"))
}

/// Parses `a.b.c.d`, `a.b.c.d/len` or `a.b.c.d/m.m.m.m`. Returns the address and the mask
/// (None when exact).
pub(crate) fn parse_ipv4_masked(s: &str) -> Result<([u8; 4], Option<[u8; 4]>), String> {
    match s.split_once('/') {
        None => Ok((parse_ipv4(s)?.octets(), None)),
        Some((a, m)) => {
            let addr = parse_ipv4(a)?.octets();
            let mask = if m.contains('.') {
                parse_ipv4(m)?.octets()
            } else {
                let len: u32 = m
                    .parse()
                    .map_err(|_| format!("{m:?} is not a prefix length"))?;
                if len > 32 {
                    return Err(format!("prefix length {len} is longer than 32"));
                }
                let bits = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                bits.to_be_bytes()
            };
            Ok((addr, Some(mask)))
        }
    }
}

/// Parses an IPv6 address with optional `/len` or `/mask`.
pub(crate) fn parse_ipv6_masked(s: &str) -> Result<([u8; 16], Option<[u8; 16]>), String> {
    match s.split_once('/') {
        None => Ok((parse_ipv6(s)?.octets(), None)),
        Some((a, m)) => {
            let addr = parse_ipv6(a)?.octets();
            let mask = if m.contains(':') {
                parse_ipv6(m)?.octets()
            } else {
                let len: u32 = m
                    .parse()
                    .map_err(|_| format!("{m:?} is not a prefix length"))?;
                if len > 128 {
                    return Err(format!("prefix length {len} is longer than 128"));
                }
                let bits = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                bits.to_be_bytes()
            };
            Ok((addr, Some(mask)))
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex digits, one or two per byte, as `ovs_scan`'s ETH_ADDR
/// scanner accepts).
pub(crate) fn parse_eth(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not an Ethernet address"));
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 {
            return Err(format!("{s:?} is not an Ethernet address"));
        }
        out[i] =
            u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not an Ethernet address"))?;
    }
    Ok(out)
}

/// Parses an Ethernet address with an optional `/mask`.
pub(crate) fn parse_eth_masked(s: &str) -> Result<([u8; 6], Option<[u8; 6]>), String> {
    match s.split_once('/') {
        None => Ok((parse_eth(s)?, None)),
        Some((a, m)) => Ok((parse_eth(a)?, Some(parse_eth(m)?))),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn fmt_eth(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Prefix length if `mask` is a CIDR mask (ones then zeros).
fn cidr_len(mask: &[u8]) -> Option<u32> {
    let bits = (mask.len() * 8) as u32;
    if bits == 0 || bits > 128 {
        return None;
    }
    // Left-align the mask in 128 bits, then it is CIDR iff nothing follows the ones.
    let m = to_u128(mask) << (128 - bits);
    let ones = m.leading_ones();
    let rest = if ones >= 128 { 0 } else { m << ones };
    (rest == 0).then_some(ones)
}

/// `ip_format_masked()`: the address (masked), then nothing, `/len` or `/mask`.
pub(crate) fn fmt_ipv4_masked(value: &[u8], mask: &[u8]) -> String {
    let v: Vec<u8> = value.iter().zip(mask).map(|(a, m)| a & m).collect();
    let addr = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
    if mask.iter().all(|&x| x == 0xff) {
        return addr.to_string();
    }
    match cidr_len(mask) {
        Some(len) => format!("{addr}/{len}"),
        None => format!(
            "{addr}/{}",
            Ipv4Addr::new(mask[0], mask[1], mask[2], mask[3])
        ),
    }
}

fn ipv6_of(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// `ipv6_format_masked()`.
pub(crate) fn fmt_ipv6_masked(value: &[u8], mask: &[u8]) -> String {
    let v: Vec<u8> = value.iter().zip(mask).map(|(a, m)| a & m).collect();
    let addr = ipv6_of(&v);
    if mask.iter().all(|&x| x == 0xff) {
        return addr.to_string();
    }
    match cidr_len(mask) {
        Some(len) => format!("{addr}/{len}"),
        None => format!("{addr}/{}", ipv6_of(mask)),
    }
}

/// `eth_format_masked()`.
pub(crate) fn fmt_eth_masked(value: &[u8], mask: &[u8]) -> String {
    if mask.iter().all(|&x| x == 0xff) {
        fmt_eth(value)
    } else {
        format!("{}/{}", fmt_eth(value), fmt_eth(mask))
    }
}

/// Names of connection-tracking state bits, lowest bit first (`ct_state_to_string()`).
pub(crate) const CT_STATE_FLAGS: &[(&str, u32)] = &[
    ("new", 0x01),
    ("est", 0x02),
    ("rel", 0x04),
    ("rpl", 0x08),
    ("inv", 0x10),
    ("trk", 0x20),
    ("snat", 0x40),
    ("dnat", 0x80),
];

/// Names of TCP flags, lowest bit first (`packet_tcp_flag_to_string()`).
pub(crate) const TCP_FLAGS: &[(&str, u32)] = &[
    ("fin", 0x001),
    ("syn", 0x002),
    ("rst", 0x004),
    ("psh", 0x008),
    ("ack", 0x010),
    ("urg", 0x020),
    ("ece", 0x040),
    ("cwr", 0x080),
    ("ns", 0x100),
];

/// Names of tunnel flags (`flow_tun_flag_to_string()`).
pub(crate) const TUN_FLAGS: &[(&str, u32)] = &[("oam", 0x1)];

fn flag_name(table: &'static [(&'static str, u32)], bit: u32) -> Option<&'static str> {
    table.iter().find(|(_, b)| *b == bit).map(|(n, _)| *n)
}

/// Parses flags written as `+a-b`, `a|b` or an integer with optional mask. Returns
/// `(value, mask)`; `max_mask` is the mask meaning "all bits".
pub(crate) fn parse_flags(
    s: &str,
    table: &[(&str, u32)],
    max_mask: u32,
) -> Result<(u32, u32), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty flags".into());
    }
    if s.starts_with('+') || s.starts_with('-') {
        let (mut value, mut mask) = (0u32, 0u32);
        let mut rest = s;
        while !rest.is_empty() {
            let sign = rest.as_bytes()[0];
            if sign != b'+' && sign != b'-' {
                return Err(format!("{s:?}: expected + or - before {rest:?}"));
            }
            let end = rest[1..]
                .find(['+', '-'])
                .map(|i| i + 1)
                .unwrap_or(rest.len());
            let name = &rest[1..end];
            let bit = table
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| format!("{s:?}: unknown flag {name:?}"))?;
            if mask & bit != 0 {
                return Err(format!("{s:?}: flag {name} given twice"));
            }
            mask |= bit;
            if sign == b'+' {
                value |= bit;
            }
            rest = &rest[end..];
        }
        return Ok((value, mask));
    }
    if s.as_bytes()[0].is_ascii_digit() {
        let (v, m) = match s.split_once('/') {
            Some((v, m)) => (v, Some(m)),
            None => (s, None),
        };
        let value = parse_uint(v, 32)? as u32;
        let mask = match m {
            Some(m) => parse_uint(m, 32)? as u32,
            None => max_mask,
        };
        return Ok((value, mask));
    }
    let mut value = 0;
    for name in s.split('|') {
        let bit = table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("{s:?}: unknown flag {name:?}"))?;
        value |= bit;
    }
    Ok((value, max_mask))
}

/// `format_flags()`: names joined by `del`, unknown bits as hex, `0` when empty.
pub(crate) fn fmt_flags(table: &'static [(&'static str, u32)], flags: u32, del: char) -> String {
    if flags == 0 {
        return "0".into();
    }
    let mut out = String::new();
    let mut bad = 0;
    let mut rest = flags;
    while rest != 0 {
        let bit = rest & rest.wrapping_neg();
        match flag_name(table, bit) {
            Some(n) => {
                out.push_str(n);
                out.push(del);
            }
            None => bad |= bit,
        }
        rest &= !bit;
    }
    if bad != 0 {
        let _ = write!(out, "0x{bad:x}{del}");
    }
    out.pop();
    out
}

/// `format_flags_masked()`: `+a-b` for the bits in `mask`, or `format_flags()` with `|`
/// when `mask` is `max_mask`.
pub(crate) fn fmt_flags_masked(
    table: &'static [(&'static str, u32)],
    flags: u32,
    mask: u32,
    max_mask: u32,
) -> String {
    if mask == max_mask {
        return fmt_flags(table, flags, '|');
    }
    if mask == 0 {
        return "0/0".into();
    }
    let mut out = String::new();
    let mut rest = mask;
    while rest != 0 {
        let bit = rest & rest.wrapping_neg();
        out.push(if flags & bit != 0 { '+' } else { '-' });
        out.push_str(flag_name(table, bit).unwrap_or("[Unknown]"));
        rest &= !bit;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_int("0x1", 4).unwrap(), vec![0, 0, 0, 1]);
        assert_eq!(parse_int("4106", 2).unwrap(), vec![0x10, 0x0a]);
        assert_eq!(parse_int("0x0", 2).unwrap(), vec![0, 0]);
        assert!(parse_int("0x10000", 2).is_err());
        assert!(parse_int("65536", 2).is_err());
        assert!(parse_int("1x", 2).is_err());
        assert_eq!(parse_u64("-1").unwrap(), u64::MAX);
        assert_eq!(
            parse_int("0x1000000000000000000000000000000", 16).unwrap()[0],
            0x01
        );
    }

    #[test]
    fn hex_like_ds_put_hex() {
        assert_eq!(fmt_hex(&[0, 0, 0, 0]), "0");
        assert_eq!(fmt_hex(&[0, 0x1, 0x0, 0x5]), "0x10005");
        assert_eq!(fmt_hex(&[0xff, 0xff]), "0xffff");
    }

    #[test]
    fn addresses_like_ovs() {
        let (a, m) = parse_ipv4_masked("10.1.0.0/255.255.0.0").unwrap();
        assert_eq!(fmt_ipv4_masked(&a, &m.unwrap()), "10.1.0.0/16");
        let (a, m) = parse_ipv4_masked("1.2.3.4/255.255.0.255").unwrap();
        assert_eq!(fmt_ipv4_masked(&a, &m.unwrap()), "1.2.0.4/255.255.0.255");
        let (a, m) = parse_ipv6_masked("fd00::/ffff:0:ffff::").unwrap();
        assert_eq!(fmt_ipv6_masked(&a, &m.unwrap()), "fd00::/ffff:0:ffff::");
        let (a, m) = parse_ipv6_masked("fd00::1/64").unwrap();
        assert_eq!(fmt_ipv6_masked(&a, &m.unwrap()), "fd00::/64");
        let (a, m) = parse_eth_masked("00:00:00:00:00:01/ff:ff:ff:00:00:00").unwrap();
        assert_eq!(
            fmt_eth_masked(&a, &m.unwrap()),
            "00:00:00:00:00:01/ff:ff:ff:00:00:00"
        );
    }

    #[test]
    fn flags_like_ovs() {
        let (v, m) = parse_flags("+trk+est-inv", CT_STATE_FLAGS, 0xff).unwrap();
        assert_eq!(fmt_flags_masked(CT_STATE_FLAGS, v, m, 0xff), "+est-inv+trk");
        let (v, m) = parse_flags("trk|new", CT_STATE_FLAGS, 0xff).unwrap();
        assert_eq!(fmt_flags_masked(CT_STATE_FLAGS, v, m, 0xff), "new|trk");
        let (v, m) = parse_flags("0x2/0x2", TCP_FLAGS, 0xfff).unwrap();
        assert_eq!(fmt_flags_masked(TCP_FLAGS, v, m, 0xfff), "+syn");
        assert!(parse_flags("+bogus", CT_STATE_FLAGS, 0xff).is_err());
    }
}
