//! Reserved numbers of OpenFlow 1.3: ports (`OFPP_*`), groups (`OFPG_*`), tables, buffer
//! ids and lengths. Plain `u32`/`u8` constants so they can be used wherever the wire
//! carries a number.

/// Largest number of a physical/logical port (OFPP_MAX).
pub const MAX: u32 = 0xffff_ff00;
/// Send the packet out the port it came in on (OFPP_IN_PORT).
pub const IN_PORT: u32 = 0xffff_fff8;
/// Submit the packet to the first flow table (OFPP_TABLE, packet-out only).
pub const TABLE: u32 = 0xffff_fff9;
/// Forward using the switch's non-OpenFlow L2 pipeline (OFPP_NORMAL).
pub const NORMAL: u32 = 0xffff_fffa;
/// Flood along the non-OpenFlow pipeline (OFPP_FLOOD).
pub const FLOOD: u32 = 0xffff_fffb;
/// All ports except the input port (OFPP_ALL).
pub const ALL: u32 = 0xffff_fffc;
/// Send to the controller (OFPP_CONTROLLER).
pub const CONTROLLER: u32 = 0xffff_fffd;
/// The local networking stack: the bridge's internal port (OFPP_LOCAL).
pub const LOCAL: u32 = 0xffff_fffe;
/// Wildcard port in requests, "no port" elsewhere (OFPP_ANY).
pub const ANY: u32 = 0xffff_ffff;

/// Largest group number (OFPG_MAX).
pub const GROUP_MAX: u32 = 0xffff_ff00;
/// All groups, in group-mod delete and group stats requests (OFPG_ALL).
pub const GROUP_ALL: u32 = 0xffff_fffc;
/// Wildcard group (OFPG_ANY).
pub const GROUP_ANY: u32 = 0xffff_ffff;

/// All tables, in flow-mod delete and flow stats requests (OFPTT_ALL).
pub const TABLE_ALL: u8 = 0xff;
/// No buffered packet (OFP_NO_BUFFER).
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// `max_len` meaning "send the whole packet, do not buffer" (OFPCML_NO_BUFFER).
pub const NO_BUFFER_LEN: u16 = 0xffff;
