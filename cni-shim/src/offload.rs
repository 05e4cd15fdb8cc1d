//! Turning transmit checksum offload off on an interface: the `ethtool -K IF tx off`
//! equivalent, through the legacy `SIOCETHTOOL`/`ETHTOOL_STXCSUM` ioctl.
//!
//! Why: OVS's userspace datapath forwards a veth's packets as they were handed to the veth,
//! and a veth with tx checksum offload on leaves TCP/UDP checksums for "hardware" to fill in.
//! Nothing fills them in, so TCP silently fails while ping works. The kernel, when tx
//! checksumming goes off, also drops the features that depend on it (TSO, GSO on checksummed
//! frames) — exactly what `ethtool -K tx off` shows.
//!
//! Why an ioctl and not the `ethtool` binary: the shim runs with whatever the node image
//! ships, and a missing `ethtool` would only show up as a broken TCP path at run time. The
//! ioctl is two plain structs; its `unsafe` is confined to this module.
//!
//! The ioctl acts in the network namespace of the socket it is issued on, so callers run this
//! on the thread that entered the pod's namespace (see [`crate::link`]).
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use crate::Error;

/// `ETHTOOL_GTXCSUM` from `<linux/ethtool.h>`: get tx checksum offload.
const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;
/// `ETHTOOL_STXCSUM` from `<linux/ethtool.h>`: set tx checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns tx checksum offload off on `iface` in the calling thread's network namespace.
pub fn disable_tx_checksum(iface: &str) -> Result<(), Error> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    ethtool(iface, &mut value)
}

/// Whether tx checksum offload is on for `iface` in the calling thread's network namespace.
pub fn tx_checksum_enabled(iface: &str) -> Result<bool, Error> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ethtool(iface, &mut value)?;
    Ok(value.data != 0)
}

fn ethtool(iface: &str, value: &mut EthtoolValue) -> Result<(), Error> {
    let fail = |source| Error::Offload {
        iface: iface.to_owned(),
        source,
    };
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a valid interface name",
        )));
    }
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail(e.into()))?;
    // SAFETY: `ifreq` is plain old data, so all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (value as *mut EthtoolValue).cast();
    // SAFETY: `sock` is an open socket we own; `req` is a valid, NUL-terminated `ifreq` whose
    // data pointer points at `value`, a live `struct ethtool_value`, for the whole call. For
    // ETHTOOL_[GS]TXCSUM the kernel reads/writes exactly that struct and nothing else.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}
