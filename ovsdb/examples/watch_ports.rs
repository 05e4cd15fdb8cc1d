//! Follows the ports of an Open vSwitch database and prints each change.
//!
//! `cargo run -p ovsdb --example watch_ports -- unix:/var/run/openvswitch/db.sock`

use ovsdb::vswitch::{self, TableRow};
use ovsdb::{Replica, TableSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ovsdb::Error> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "unix:/var/run/openvswitch/db.sock".into());
    let replica = Replica::start(
        &target,
        vswitch::DATABASE,
        [
            TableSpec::columns("Bridge", &["name", "ports"]),
            TableSpec::columns("Port", &["name", "interfaces", "tag", "external_ids"]),
        ],
    )
    .await?;
    for bridge in vswitch::rows::<vswitch::Bridge>(&replica.snapshot()) {
        println!("bridge {} has {} ports", bridge.name, bridge.ports.len());
    }
    let Some(mut changes) = replica.changes() else {
        return Ok(());
    };
    while let Some(change) = changes.recv().await {
        if change.table != "Port" {
            continue;
        }
        let name = |row: &Option<ovsdb::Row>| {
            row.as_ref()
                .map(|r| vswitch::Port::from_row(&change.uuid, r).name)
                .unwrap_or_default()
        };
        match (&change.old, &change.new) {
            (None, Some(_)) => println!("+ port {}", name(&change.new)),
            (Some(_), None) => println!("- port {}", name(&change.old)),
            _ => println!("~ port {}", name(&change.new)),
        }
    }
    Ok(())
}
