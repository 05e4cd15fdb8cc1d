//! OVSDB (RFC 7047) client.
//!
//! Owns: JSON-RPC framing, typed OVSDB data, transactions, monitors and a live replica
//! (OVS's "IDL"), plus typed views of the `Open_vSwitch` schema tables.
//! Knows nothing about Kubernetes or Switchyard's pipeline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovsdb::Error> {
//! use ovsdb::{Client, Condition, Mutation, Row, Transaction};
//! let client = Client::connect("unix:/var/run/openvswitch/db.sock").await?;
//! let mut txn = Transaction::new();
//! let iface = txn.insert("Interface", Row::new().with("name", "p1"));
//! let port = txn.insert("Port", Row::new().with("name", "p1").with("interfaces", &iface));
//! txn.mutate("Bridge", vec![Condition::eq("name", "br-int")], vec![Mutation::insert("ports", &port)]);
//! let results = client.transact("Open_vSwitch", txn).await?;
//! println!("new port {:?}", results[1].uuid());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod data;
pub mod error;
pub mod framing;
pub mod ovs_json;
pub mod replica;
pub mod schema;
pub mod transaction;
pub mod vswitch;

pub use client::{
    Client, ClientOptions, MonitorRequest, MonitorSince, Notification, PendingReply, Target,
    TlsClient,
};
pub use data::{Atom, Datum, NamedUuid, Row, Uuid};
pub use error::Error;

pub use replica::{
    LockState, MonitorMethod, Replica, ReplicaOptions, ReplicaStatus, RowChange, Snapshot, Table,
    TableSpec,
};
pub use schema::{
    AtomicType, BaseType, ColumnSchema, ColumnType, DatabaseSchema, RefType, TableSchema,
};
pub use transaction::{
    Condition, Function, Mutation, Mutator, Operation, OperationResult, Transaction, WaitUntil,
};
