//! The connection layer against a scripted peer on a socket pair: protocol behaviour that
//! ovs-vswitchd cannot be made to show on demand (a peer that stops answering, a peer
//! that only speaks OpenFlow 1.0, echo requests on a unix socket, multi-part replies
//! of a chosen shape). The peer speaks through the same codec, byte for byte.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openflow::conn::{Config, OfCodec};
use openflow::message::multipart::OFPMPF_MORE;
use openflow::*;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

type Peer = Framed<UnixStream, OfCodec>;

const LIMIT: Duration = Duration::from_secs(20);

async fn recv(peer: &mut Peer) -> (u32, Message) {
    let (xid, m) = tokio::time::timeout(LIMIT, peer.next())
        .await
        .expect("peer waited too long")
        .expect("stream open")
        .expect("frame");
    (xid, m.expect("decodable"))
}

/// Starts a connection whose other end is a scripted switch that completes the
/// handshake with datapath id 0xabc.
async fn connected(config: Config) -> (Connection, Peer) {
    let (a, b) = UnixStream::pair().unwrap();
    let mut peer = Framed::new(b, OfCodec);
    let client = tokio::spawn(Connection::from_stream(a, "scripted".into(), config));
    let (_, hello) = recv(&mut peer).await;
    assert!(matches!(hello, Message::Hello(h) if h.supports(4)));
    peer.send((1, Message::Hello(Hello::of13()))).await.unwrap();
    let (xid, req) = recv(&mut peer).await;
    assert_eq!(req, Message::FeaturesRequest);
    peer.send((
        xid,
        Message::FeaturesReply(FeaturesReply {
            datapath_id: 0xabc,
            n_tables: 254,
            ..FeaturesReply::default()
        }),
    ))
    .await
    .unwrap();
    let conn = client.await.unwrap().expect("handshake");
    assert_eq!(conn.datapath_id(), 0xabc);
    (conn, peer)
}

fn quiet() -> Config {
    Config {
        echo_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

#[tokio::test]
async fn answers_echo_requests_with_their_xid_and_payload() {
    let (conn, mut peer) = connected(quiet()).await;
    peer.send((
        77,
        Message::EchoRequest(Bytes::from_static(b"are you there")),
    ))
    .await
    .unwrap();
    let (xid, m) = recv(&mut peer).await;
    assert_eq!(xid, 77);
    assert_eq!(m, Message::EchoReply(Bytes::from_static(b"are you there")));
    assert_eq!(conn.stats().echo_requests_answered, 1);
}

#[tokio::test]
async fn a_peer_that_stops_answering_echoes_is_declared_dead() {
    let config = Config {
        echo_interval: Duration::from_millis(50),
        max_missed_echoes: 2,
        ..Config::default()
    };
    let (conn, mut peer) = connected(config).await;
    // The peer reads our echo requests but never answers.
    let mut echoes = 0;
    while let Ok(Some(Ok((_, Ok(Message::EchoRequest(_)))))) =
        tokio::time::timeout(LIMIT, peer.next()).await
    {
        echoes += 1;
    }
    assert_eq!(
        echoes, 2,
        "two unanswered echoes, then the connection is dropped"
    );
    let reason = conn.closed_reason().expect("closed");
    assert!(
        reason.contains("did not answer 2 echo requests"),
        "{reason}"
    );
    let e = conn.barrier().await.unwrap_err();
    assert!(matches!(e, Error::Closed(_)), "{e}");
}

#[tokio::test]
async fn a_peer_busy_with_our_request_is_not_declared_dead_until_the_request_times_out() {
    // As ovs-vswitchd committing a large bundle: it answers nothing, echoes included,
    // until it is done.
    let config = Config {
        echo_interval: Duration::from_millis(50),
        max_missed_echoes: 2,
        request_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    let (conn, mut peer) = connected(config).await;
    let c = conn.clone();
    let barrier = tokio::spawn(async move { c.barrier().await });
    let (xid, m) = recv(&mut peer).await;
    assert_eq!(m, Message::BarrierRequest);
    // Silent for ten echo intervals (five times what would kill an idle peer).
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut echoes = 0;
    while let Ok(Some(Ok((_, Ok(m))))) = tokio::time::timeout_at(quiet_until, peer.next()).await {
        assert_eq!(m, Message::EchoRequest(Bytes::new()));
        echoes += 1;
    }
    assert_eq!(echoes, 2, "echoes stop at the limit, the connection stays");
    assert_eq!(conn.closed_reason(), None, "busy, not dead");
    peer.send((xid, Message::BarrierReply)).await.unwrap();
    barrier.await.unwrap().expect("the late reply is taken");
    assert_eq!(conn.closed_reason(), None);

    // A request that times out no longer holds the connection: then the peer is dead.
    let c = conn.clone();
    let barrier = tokio::spawn(async move { c.barrier().await });
    let e = barrier.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while conn.closed_reason().is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = conn
        .closed_reason()
        .expect("closed once nothing is pending");
    assert!(reason.contains("did not answer"), "{reason}");
}

#[tokio::test]
async fn a_peer_without_openflow_13_fails_the_handshake() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut peer = Framed::new(b, OfCodec);
    let client = tokio::spawn(Connection::from_stream(a, "of10-switch".into(), quiet()));
    let _ = recv(&mut peer).await;
    peer.send((
        1,
        Message::Hello(Hello {
            version: 1,
            version_bitmap: vec![],
        }),
    ))
    .await
    .unwrap();
    let e = client.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("of10-switch"), "{e}");
    assert!(e.to_string().contains("OpenFlow 1.3"), "{e}");
    // It told the peer why (OFPET_HELLO_FAILED).
    let (_, m) = recv(&mut peer).await;
    assert!(
        matches!(m, Message::Error(ErrorMsg { error_type: 0, .. })),
        "{m:?}"
    );
}

#[tokio::test]
async fn multipart_replies_are_reassembled_and_errors_routed_by_xid() {
    let (conn, mut peer) = connected(quiet()).await;
    let mut events = conn.take_events().unwrap();
    let c = conn.clone();
    let dump = tokio::spawn(async move { c.dump_flows(FlowStatsRequest::table(3)).await });
    let (xid, req) = recv(&mut peer).await;
    assert_eq!(
        req,
        Message::MultipartRequest(MultipartRequest::new(MultipartRequestBody::Flow(
            FlowStatsRequest::table(3)
        )))
    );
    let flow = |cookie| FlowStats {
        table_id: 3,
        duration_sec: 1,
        duration_nsec: 0,
        priority: 1,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: 0,
        cookie,
        packet_count: 0,
        byte_count: 0,
        match_: Match::new(),
        instructions: vec![Instruction::GotoTable(4)],
    };
    // An unrelated asynchronous message in the middle of the reply.
    peer.send((
        0,
        Message::PacketIn(PacketIn {
            buffer_id: port::NO_BUFFER,
            total_len: 3,
            reason: 1,
            table_id: 0,
            cookie: 9,
            match_: Match::new(),
            data: Bytes::from_static(b"abc"),
        }),
    ))
    .await
    .unwrap();
    for (i, more) in [(1u64, true), (2, true), (3, false)] {
        let flags = if more { OFPMPF_MORE } else { 0 };
        let part = MultipartReply {
            flags,
            body: MultipartReplyBody::Flow(vec![flow(i), flow(i + 10)]),
        };
        peer.send((xid, part.into())).await.unwrap();
    }
    let flows = dump.await.unwrap().unwrap();
    assert_eq!(
        flows.iter().map(|f| f.cookie).collect::<Vec<_>>(),
        vec![1, 11, 2, 12, 3, 13]
    );
    let ev = events.recv().await.unwrap();
    assert!(matches!(ev, Message::PacketIn(PacketIn { cookie: 9, .. })));

    // An error answering a request fails that request; one for a fire-and-forget
    // message is an event.
    let c = conn.clone();
    let req = tokio::spawn(async move { c.request(&Message::GetConfigRequest).await });
    let (xid, _) = recv(&mut peer).await;
    let sent = conn.send(&Message::BarrierRequest).unwrap();
    let (xid2, _) = recv(&mut peer).await;
    assert_eq!(xid2, sent);
    let err = |data: &'static [u8]| ErrorMsg {
        error_type: 1,
        code: 1,
        experimenter: None,
        data: Bytes::from_static(data),
    };
    peer.send((xid2, Message::Error(err(b"second"))))
        .await
        .unwrap();
    peer.send((xid, Message::Error(err(b"first"))))
        .await
        .unwrap();
    match req.await.unwrap() {
        Err(Error::Switch(e)) => {
            assert_eq!(e.data, Bytes::from_static(b"first"));
            assert_eq!(e.name(), Some("OFPBRC_BAD_TYPE"));
        }
        other => panic!("{other:?}"),
    }
    let ev = events.recv().await.unwrap();
    assert!(matches!(ev, Message::Error(e) if e.data == Bytes::from_static(b"second")));
}

#[tokio::test]
async fn a_closed_peer_fails_pending_requests() {
    let (conn, mut peer) = connected(quiet()).await;
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.barrier().await });
    let _ = recv(&mut peer).await;
    drop(peer);
    let e = pending.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Closed(_)), "{e}");
    assert!(conn.closed_reason().unwrap().contains("scripted"));
}

#[tokio::test]
async fn a_peer_that_answers_every_echo_stays_alive() {
    // With one allowed miss, any reply must reset the count, however late in the
    // interval it lands.
    let config = Config {
        echo_interval: Duration::from_millis(100),
        max_missed_echoes: 1,
        ..Config::default()
    };
    let (conn, mut peer) = connected(config).await;
    for _ in 0..20 {
        let (xid, m) = recv(&mut peer).await;
        assert_eq!(m, Message::EchoRequest(Bytes::new()));
        peer.send((xid, Message::EchoReply(Bytes::new())))
            .await
            .unwrap();
    }
    assert_eq!(conn.closed_reason(), None);
    assert!(conn.stats().echo_replies_received >= 19);
}

/// Plays the switch side of the handshake on any stream.
async fn switch_handshake<S>(peer: &mut Framed<S, OfCodec>, datapath_id: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    peer.send((1, Message::Hello(Hello::of13()))).await.unwrap();
    loop {
        let (xid, m) = tokio::time::timeout(LIMIT, peer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match m.unwrap() {
            Message::Hello(_) => {}
            Message::FeaturesRequest => {
                let f = FeaturesReply {
                    datapath_id,
                    ..FeaturesReply::default()
                };
                peer.send((xid, Message::FeaturesReply(f))).await.unwrap();
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn tcp_connect_and_ptcp_listen() {
    // Active: we connect to a switch listening on loopback.
    let sw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = sw.local_addr().unwrap();
    let switch = tokio::spawn(async move {
        let (s, _) = sw.accept().await.unwrap();
        let mut peer = Framed::new(s, OfCodec);
        switch_handshake(&mut peer, 0x11).await;
        peer
    });
    let conn = Connection::connect(&format!("tcp:{addr}")).await.unwrap();
    assert_eq!(conn.datapath_id(), 0x11);
    let _peer = switch.await.unwrap();

    // Passive: a switch connects to our ptcp listener.
    let mut listener = Listener::bind("ptcp:0:127.0.0.1").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let switch = tokio::spawn(async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut peer = Framed::new(s, OfCodec);
        switch_handshake(&mut peer, 0x22).await;
        peer
    });
    let conn = listener.accept().await.unwrap();
    assert_eq!(conn.datapath_id(), 0x22);
    assert!(conn.peer().contains("127.0.0.1"), "{}", conn.peer());
    let _peer = switch.await.unwrap();

    let e = Connection::connect("ptcp:6653").await.unwrap_err();
    assert!(matches!(e, Error::BadTarget { .. }), "{e}");
}

fn all_changes() -> FlowMonitorRequest {
    use openflow::message::flow_monitor::flags;
    FlowMonitorRequest::all(
        1,
        flags::ADD | flags::DELETE | flags::MODIFY | flags::ACTIONS,
    )
}

#[tokio::test]
async fn a_switch_rejecting_flow_monitors_makes_monitor_flows_fail() {
    let (conn, mut peer) = connected(quiet()).await;
    let task = tokio::spawn({
        let conn = conn.clone();
        async move { conn.monitor_flows(all_changes()).await }
    });
    let (xid, req) = recv(&mut peer).await;
    assert!(
        matches!(
            &req,
            Message::MultipartRequest(MultipartRequest {
                body: MultipartRequestBody::FlowMonitor(v),
                ..
            }) if v == &vec![all_changes()]
        ),
        "{req:?}"
    );
    // What vswitchd answers an NXST_FLOW_MONITOR on OpenFlow 1.3: OFPBRC_BAD_EXP_TYPE.
    let error = ErrorMsg {
        error_type: 1,
        code: 4,
        experimenter: None,
        data: Bytes::new(),
    };
    peer.send((xid, Message::Error(error.clone())))
        .await
        .unwrap();
    let r = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    match r {
        Err(Error::Switch(e)) => assert_eq!((e.error_type, e.code), (1, 4)),
        other => panic!("expected the switch's error, got {other:?}"),
    }
}

#[tokio::test]
async fn unsolicited_flow_updates_and_pauses_reach_the_event_channel() {
    let (conn, mut peer) = connected(quiet()).await;
    let mut events = conn.take_events().unwrap();
    let task = tokio::spawn({
        let conn = conn.clone();
        async move { conn.monitor_flows(all_changes()).await }
    });
    let (xid, _) = recv(&mut peer).await;
    assert_ne!(xid, 0);
    let reply = |updates| {
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::FlowMonitor(updates),
        })
    };
    peer.send((xid, reply(vec![]))).await.unwrap();
    let initial = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert_eq!(initial.unwrap(), vec![]);
    let update = FlowUpdate::Full(FlowUpdateFull {
        event: FlowUpdateEvent::Deleted,
        reason: 2,
        priority: 9,
        idle_timeout: 0,
        hard_timeout: 0,
        table_id: 4,
        cookie: 0x55,
        match_: Match::new(),
        instructions: vec![],
    });
    let sent = [
        reply(vec![update.clone()]),
        Message::FlowMonitorPaused(MonitorExt::Onf),
        Message::FlowMonitorResumed(MonitorExt::Onf),
        reply(vec![FlowUpdate::Abbrev { xid: 3 }, update]),
    ];
    for m in &sent {
        peer.send((0, m.clone())).await.unwrap();
    }
    for want in sent {
        let got = tokio::time::timeout(LIMIT, events.recv())
            .await
            .expect("event in time")
            .expect("channel open");
        assert_eq!(got, want);
    }
}
