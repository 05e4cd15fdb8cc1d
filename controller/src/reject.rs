//! Refusing a connection to a Service that has no usable endpoint: the answer a kernel
//! would give for a closed port, built from the client's packet. OVS cannot forge a TCP RST
//! by itself, so the Service feature sends such packets to the controller (metered: a flood
//! costs the controller at most the meter's rate) and the node's agent sends back what
//! this module builds (as Antrea's pkg/agent/controller/networkpolicy/reject.go does).
//!
//! Owns: parsing the client's Ethernet/IPv4 packet and building the reply: a TCP RST+ACK
//! (RFC 9293 §3.10.7.1: a segment to a closed port gets `seq = SEG.ACK` when it carries ACK,
//! else `seq = 0, ack = SEG.SEQ + SEG.LEN`, SYN counting one) or an ICMP port unreachable
//! (RFC 792: type 3 code 3, carrying the original IP header and the first 8 bytes of its
//! payload; for UDP and SCTP). Pure: bytes in, bytes out. Does not own: sending (see `agent`).

const ETH_HEADER: usize = 14;
const ETH_TYPE_IPV4: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The reply that refuses `packet` (an Ethernet frame), or `None` when it is not a TCP
/// segment, UDP datagram or SCTP packet over IPv4 that deserves one (a RST is never
/// answered).
pub fn refusal(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < ETH_HEADER + 20
        || u16::from_be_bytes([packet[12], packet[13]]) != ETH_TYPE_IPV4
    {
        return None;
    }
    let ip = &packet[ETH_HEADER..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if total < ihl {
        return None;
    }
    // Only the first fragment has the L4 header.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let l4 = &ip[ihl..total];
    let mut eth = Vec::with_capacity(ETH_HEADER);
    eth.extend_from_slice(&packet[6..12]);
    eth.extend_from_slice(&packet[0..6]);
    eth.extend_from_slice(&ETH_TYPE_IPV4.to_be_bytes());
    let (proto, payload) = match ip[9] {
        PROTO_TCP => (PROTO_TCP, tcp_reset(l4, dst, src)?),
        PROTO_UDP | PROTO_SCTP => (PROTO_ICMP, port_unreachable(&ip[..total.min(ihl + 8)])?),
        _ => return None,
    };
    let mut out = eth;
    out.extend_from_slice(&ipv4_header(dst, src, proto, payload.len()));
    out.extend_from_slice(&payload);
    Some(out)
}

fn tcp_reset(seg: &[u8], from: [u8; 4], to: [u8; 4]) -> Option<Vec<u8>> {
    if seg.len() < 20 {
        return None;
    }
    let flags = seg[13];
    if flags & TCP_RST != 0 {
        return None;
    }
    let data_offset = usize::from(seg[12] >> 4) * 4;
    let data_len = seg.len().saturating_sub(data_offset) as u32;
    let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
    let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let (r_seq, r_ack, r_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let len = data_len + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (0, seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&seg[2..4]); // source port: the client's destination
    t.extend_from_slice(&seg[0..2]);
    t.extend_from_slice(&r_seq.to_be_bytes());
    t.extend_from_slice(&r_ack.to_be_bytes());
    t.push(5 << 4);
    t.push(r_flags);
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // window, checksum, urgent
    let mut pseudo = Vec::with_capacity(12 + t.len());
    pseudo.extend_from_slice(&from);
    pseudo.extend_from_slice(&to);
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    let sum = checksum(&pseudo);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    Some(t)
}

fn port_unreachable(original: &[u8]) -> Option<Vec<u8>> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(original);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(m)
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, payload: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[6] = 0x40; // don't fragment
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let word = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![
            0x0a, 0x58, 10, 244, 1, 1, 0x0a, 0x58, 10, 244, 1, 5, 0x08, 0x00,
        ];
        f.extend_from_slice(&ipv4_header(
            [10, 244, 1, 5],
            [10, 96, 0, 10],
            proto,
            l4.len(),
        ));
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn a_syn_gets_a_rst_ack_from_the_service_address() {
        // sport 40000, dport 80, seq 1000, SYN.
        let mut syn = vec![
            0x9c, 0x40, 0, 80, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, TCP_SYN, 0xff, 0xff,
        ];
        syn.extend_from_slice(&[0, 0, 0, 0]);
        let reply = refusal(&frame(PROTO_TCP, &syn)).expect("a reply");
        assert_eq!(
            &reply[0..6],
            &[0x0a, 0x58, 10, 244, 1, 5],
            "back to the client's MAC"
        );
        let ip = &reply[14..34];
        assert_eq!(checksum(ip), 0, "valid IPv4 header checksum");
        assert_eq!(&ip[12..16], &[10, 96, 0, 10]);
        assert_eq!(&ip[16..20], &[10, 244, 1, 5]);
        let tcp = &reply[34..];
        assert_eq!(&tcp[0..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]), 1001);
        assert_eq!(tcp[13], TCP_RST | TCP_ACK);
        let mut pseudo = vec![10, 96, 0, 10, 10, 244, 1, 5, 0, PROTO_TCP, 0, 20];
        pseudo.extend_from_slice(tcp);
        assert_eq!(checksum(&pseudo), 0, "valid TCP checksum");
        // A RST is never answered.
        let mut rst = syn.clone();
        rst[13] = TCP_RST;
        assert_eq!(refusal(&frame(PROTO_TCP, &rst)), None);
    }

    #[test]
    fn a_udp_datagram_gets_port_unreachable_with_the_original_header() {
        let udp = [0x9c, 0x41, 0, 53, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o'];
        let f = frame(PROTO_UDP, &udp);
        let reply = refusal(&f).expect("a reply");
        let ip = &reply[14..34];
        assert_eq!(ip[9], PROTO_ICMP);
        let icmp = &reply[34..];
        assert_eq!(&icmp[0..2], &[3, 3]);
        assert_eq!(checksum(icmp), 0);
        assert_eq!(&icmp[8..], &f[14..14 + 28], "original IP header + 8 bytes");
        assert_eq!(refusal(&f[..20]), None, "a truncated frame is ignored");
    }

    #[test]
    fn an_sctp_packet_gets_port_unreachable_with_the_original_header() {
        // Common header (ports 40000 → 9000, verification tag 0, checksum) and an INIT.
        let mut sctp = vec![0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 0, 0, 0, 0, 0];
        sctp.extend_from_slice(&[
            1, 0, 0, 20, 0, 0, 0x12, 0x34, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1,
        ]);
        let f = frame(PROTO_SCTP, &sctp);
        let reply = refusal(&f).expect("a reply");
        assert_eq!(reply[14 + 9], PROTO_ICMP);
        let icmp = &reply[34..];
        assert_eq!(&icmp[0..2], &[3, 3]);
        assert_eq!(checksum(icmp), 0);
        assert_eq!(&icmp[8..], &f[14..14 + 28], "original IP header + 8 bytes");
    }
}
