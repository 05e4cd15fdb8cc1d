//! OFPT_PORT_STATUS and the `ofp_port` description shared with OFPMP_PORT_DESC.

use bytes::{BufMut, BytesMut};

use crate::Result;
use crate::wire::{Reader, put_fixed_str, put_zeros};

/// `struct ofp_port`: a port as the switch describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortDesc {
    /// OpenFlow port number (the `ofport` in OVSDB).
    pub port_no: u32,
    /// MAC address.
    pub hw_addr: [u8; 6],
    /// Interface name.
    pub name: String,
    /// OFPPC_* administrative settings (1: port down).
    pub config: u32,
    /// OFPPS_* state (1: link down, 4: live).
    pub state: u32,
    /// Current features.
    pub curr: u32,
    /// Advertised features.
    pub advertised: u32,
    /// Supported features.
    pub supported: u32,
    /// Features advertised by the peer.
    pub peer: u32,
    /// Current speed in kbps.
    pub curr_speed: u32,
    /// Maximum speed in kbps.
    pub max_speed: u32,
}

impl PortDesc {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.port_no);
        put_zeros(out, 4);
        out.put_slice(&self.hw_addr);
        put_zeros(out, 2);
        put_fixed_str(out, &self.name, 16);
        for v in [
            self.config,
            self.state,
            self.curr,
            self.advertised,
            self.supported,
            self.peer,
            self.curr_speed,
            self.max_speed,
        ] {
            out.put_u32(v);
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<PortDesc> {
        let port_no = r.u32("port port_no")?;
        r.skip("port pad", 4)?;
        let hw_addr = r.array::<6>("port hw_addr")?;
        r.skip("port pad", 2)?;
        let name = r.fixed_str("port name", 16)?;
        Ok(PortDesc {
            port_no,
            hw_addr,
            name,
            config: r.u32("port config")?,
            state: r.u32("port state")?,
            curr: r.u32("port curr")?,
            advertised: r.u32("port advertised")?,
            supported: r.u32("port supported")?,
            peer: r.u32("port peer")?,
            curr_speed: r.u32("port curr_speed")?,
            max_speed: r.u32("port max_speed")?,
        })
    }
}

/// Why a port status was sent (`enum ofp_port_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortReason {
    /// OFPPR_ADD.
    Add,
    /// OFPPR_DELETE.
    Delete,
    /// OFPPR_MODIFY.
    Modify,
    /// A value this crate does not know.
    Other(u8),
}

/// OFPT_PORT_STATUS: a port was added, removed or changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortStatus {
    /// What happened.
    pub reason: PortReason,
    /// The port.
    pub desc: PortDesc,
}

impl PortStatus {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(match self.reason {
            PortReason::Add => 0,
            PortReason::Delete => 1,
            PortReason::Modify => 2,
            PortReason::Other(v) => v,
        });
        put_zeros(out, 7);
        self.desc.encode(out);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<PortStatus> {
        let reason = match r.u8("port status reason")? {
            0 => PortReason::Add,
            1 => PortReason::Delete,
            2 => PortReason::Modify,
            v => PortReason::Other(v),
        };
        r.skip("port status pad", 7)?;
        Ok(PortStatus {
            reason,
            desc: PortDesc::decode(r)?,
        })
    }
}
