//! Framing on real captured ovsdb-server traffic (fixtures/README.md): every split point,
//! byte-at-a-time delivery, a replay through a live `Client`, and hostile input.

use ovsdb::framing::Framer;
use ovsdb::{Client, ClientOptions, Error, Notification};
use proptest::prelude::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const SERVER: &[u8] = include_bytes!("fixtures/server-to-client.bin");
const CLIENT: &[u8] = include_bytes!("fixtures/client-to-server.bin");

/// The messages as an independent parser (serde_json's stream reader) sees them.
fn reference(bytes: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("fixture is a valid JSON stream")
}

fn drain(framer: &mut Framer, out: &mut Vec<Value>) {
    while let Some(v) = framer.next_message().expect("fixture frames cleanly") {
        out.push(v);
    }
}

#[test]
fn fixture_holds_the_expected_exchange() {
    let server = reference(SERVER);
    assert_eq!(server.len(), 7);
    assert_eq!(
        server[0]["result"],
        serde_json::json!(["Open_vSwitch", "_Server"])
    );
    assert_eq!(server[3]["method"], "update3");
    assert_eq!(reference(CLIENT).len(), 4);
}

#[test]
fn every_split_point_of_real_traffic_yields_the_same_messages() {
    for bytes in [SERVER, CLIENT] {
        let expected = reference(bytes);
        for split in 0..=bytes.len() {
            let mut framer = Framer::new(1 << 20);
            let mut got = Vec::new();
            framer.push(&bytes[..split]);
            drain(&mut framer, &mut got);
            framer.push(&bytes[split..]);
            drain(&mut framer, &mut got);
            assert_eq!(got, expected, "split at byte {split}");
            assert_eq!(framer.buffered(), 0);
        }
    }
}

#[test]
fn byte_at_a_time_and_three_way_splits() {
    let expected = reference(SERVER);
    let mut framer = Framer::new(1 << 20);
    let mut got = Vec::new();
    for b in SERVER {
        framer.push(std::slice::from_ref(b));
        drain(&mut framer, &mut got);
    }
    assert_eq!(got, expected);
    for a in (0..SERVER.len()).step_by(7) {
        for b in (a..SERVER.len()).step_by(97) {
            let mut framer = Framer::new(1 << 20);
            let mut got = Vec::new();
            for part in [&SERVER[..a], &SERVER[a..b], &SERVER[b..]] {
                framer.push(part);
                drain(&mut framer, &mut got);
            }
            assert_eq!(got, expected, "splits at {a} and {b}");
        }
    }
}

#[tokio::test]
async fn a_client_fed_the_capture_in_odd_chunks_delivers_the_update3_notifications() {
    let (ours, mut server) = tokio::net::UnixStream::pair().expect("socketpair");
    let client = Client::from_stream(ours, "capture", ClientOptions::default());
    let mut notes = client.notifications().expect("first take");
    for chunk in SERVER.chunks(13) {
        server.write_all(chunk).await.expect("write");
    }
    let mut updates = Vec::new();
    while updates.len() < 3 {
        match notes.recv().await.expect("notification") {
            Notification::Update3 {
                monitor_id,
                updates: u,
                ..
            } => {
                assert_eq!(monitor_id, "m");
                updates.push(u);
            }
            other => panic!("unexpected notification {other:?}"),
        }
    }
    let port = &updates[0]["Port"];
    let (_, insert) = port
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("one port");
    assert_eq!(insert["insert"]["name"], "p}{\"5");
    assert_eq!(
        insert["insert"]["external_ids"],
        serde_json::json!(["map", [["a\"]\\", "x{"]]])
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        &b"hello"[..],
        b"\x00{}",
        b"{}\"x\"",
        b"} {",
        b"123",
        b"{\"a\":1}]",
    ] {
        let mut framer = Framer::new(1024);
        framer.push(bad);
        let mut result = Ok(Some(Value::Null));
        while let Ok(Some(_)) = result {
            result = framer.next_message();
        }
        assert!(
            result.is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn an_endless_message_is_cut_off_at_the_limit() {
    let mut framer = Framer::new(4096);
    framer.push(b"{\"a\":\"");
    let mut error = None;
    for _ in 0..100 {
        framer.push(&[b'x'; 1000]);
        if let Err(e) = framer.next_message() {
            error = Some(e);
            break;
        }
        assert!(framer.buffered() <= 4096 + 1000);
    }
    assert!(
        matches!(error, Some(Error::MessageTooLarge { limit: 4096, .. })),
        "{error:?}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_in_arbitrary_chunks_never_panic_or_overgrow(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)
    ) {
        let mut framer = Framer::new(256);
        for chunk in &chunks {
            framer.push(chunk);
            loop {
                match framer.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
            prop_assert!(framer.buffered() <= 256 + 64);
        }
    }

    #[test]
    fn real_traffic_split_into_random_chunks_round_trips(cuts in proptest::collection::vec(0..SERVER.len(), 0..20)) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut framer = Framer::new(1 << 20);
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([SERVER.len()]) {
            framer.push(&SERVER[start..cut]);
            start = cut;
            while let Some(v) = framer.next_message().expect("clean") {
                got.push(v);
            }
        }
        prop_assert_eq!(got, reference(SERVER));
    }
}
