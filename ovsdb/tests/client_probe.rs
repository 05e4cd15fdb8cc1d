//! Dead-peer detection: a peer that accepts the connection and then says nothing is
//! probed with `echo` and dropped, and waiting requests fail with a clear error.

use std::time::Duration;

use ovsdb::{Client, ClientOptions, Error};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_silent_peer_is_probed_then_dropped() {
    let dir = std::env::temp_dir().join(format!("ovsdb-probe-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("silent.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let peer = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        // Read (and never answer) until the client gives up on us.
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let options = ClientOptions {
        inactivity_probe: Some(Duration::from_millis(200)),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&format!("unix:{}", path.display()), options)
        .await
        .expect("connect");
    let err = client
        .list_dbs()
        .await
        .expect_err("a silent peer cannot answer");
    assert!(
        matches!(&err, Error::Disconnected { reason, .. } if reason.contains("did not answer an echo")),
        "{err}"
    );
    drop(client);
    let seen = peer.await.expect("peer");
    assert!(seen.contains(r#""method":"list_dbs""#), "{seen}");
    assert!(
        seen.contains(r#""method":"echo""#),
        "no echo probe sent: {seen}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
