//! Async connection (tokio): placeholder until the connection layer lands.
