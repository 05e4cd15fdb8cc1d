//! Ethernet MAC addresses: the one type for what the controller allocates, writes to OVSDB
//! and matches in flows, and what the CNI plugin sets on a pod's interface and checks.
//!
//! A crate of its own (like `switchyard-target`) so the CNI plugin, a small binary on every
//! node, shares the type without linking the controller or an OpenFlow codec. Owns the
//! text form (`0a:58:0a:f4:01:05`) and the pod-MAC rule; knows nothing of OVS or Kubernetes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A MAC address. Displays and parses as six two-digit lowercase (parsing: any case) hex
/// bytes separated by colons, `0a:58:0a:f4:01:05` — the form OVS and the kernel print.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac([u8; 6]);

impl Mac {
    /// The address with these octets.
    pub const fn new(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }

    /// The MAC that goes with a pod or gateway address: `0a:58` followed by the IPv4
    /// address. Locally administered and unicast (0x0a), the same convention
    /// ovn-kubernetes uses, so a MAC seen in a trace tells the address at a glance and
    /// needs no bookkeeping of its own.
    pub const fn for_ipv4(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x0a, 0x58, o[0], o[1], o[2], o[3]])
    }

    /// The six octets, for wire formats (OpenFlow match fields and actions, netlink).
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The address in a hardware-address attribute (netlink `IFLA_ADDRESS`), if it has
    /// six bytes (an Ethernet interface's).
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

/// The pod MAC rule, [`Mac::for_ipv4`].
impl From<Ipv4Addr> for Mac {
    fn from(ip: Ipv4Addr) -> Mac {
        Mac::for_ipv4(ip)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// A string that is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six two-digit hex bytes separated by colons, like 0a:58:0a:f4:01:05"
)]
pub struct ParseMacError {
    /// The string as given.
    pub input: String,
}

impl FromStr for Mac {
    type Err = ParseMacError;

    fn from_str(text: &str) -> Result<Mac, ParseMacError> {
        let bad = || ParseMacError {
            input: text.to_owned(),
        };
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for b in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(Mac(mac)),
            Some(_) => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_rule_display_and_parse_round_trip() {
        let mac = Mac::for_ipv4(Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(mac.octets(), [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]);
        assert_eq!(mac, Mac::from(Ipv4Addr::new(10, 244, 1, 5)));
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:05");
        assert_eq!(format!("{mac:?}"), "Mac(0a:58:0a:f4:01:05)");
        assert_eq!("0a:58:0A:f4:01:05".parse::<Mac>(), Ok(mac));
        assert_eq!(<[u8; 6]>::from(mac), mac.octets());
        assert_eq!(Mac::from_slice(&mac.octets()), Some(mac));
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn bad_macs_are_rejected_naming_the_input() {
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:05:06",
            "zz:58:0a:f4:01:05",
            "0a:58:0a:f4:01:",
            "0a:58:0a:f4:01:105",
            "0a:58:0a:f4:01:5",
            "+a:58:0a:f4:01:05",
        ] {
            let error = bad.parse::<Mac>().unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }
}
