//! Keeping one switch's flow tables equal to the compiler's output.
//!
//! Owns: what the controller believes a connected br-int holds, reading it back from the
//! switch when it does not know (a new connection, a controller restart), and sending the
//! reconciliation plan as one atomic, ordered bundle — a node never sees half a change.

use openflow::{FlowMod, FlowModCommand, FlowStatsRequest, Message, port};
use tracing::info;

use crate::Error;
use crate::compiler::Flow;
use crate::reconcile::{self, FlowChange, InstalledFlow};

/// The flows a switch is known to hold. `None` until read back from the switch.
#[derive(Debug, Default)]
pub struct SwitchFlows {
    installed: Option<Vec<InstalledFlow>>,
}

impl SwitchFlows {
    /// Makes the switch hold exactly `desired`, sending only the difference.
    pub async fn sync(
        &mut self,
        node: &str,
        conn: &openflow::Connection,
        desired: &[Flow],
    ) -> Result<(), Error> {
        let of_err = |e: openflow::Error| Error::OpenFlow {
            node: node.to_owned(),
            source: Box::new(e),
        };
        let actual = match self.installed.take() {
            Some(flows) => flows,
            None => {
                let stats = conn
                    .dump_flows(FlowStatsRequest::default())
                    .await
                    .map_err(of_err)?;
                stats
                    .into_iter()
                    .map(|s| InstalledFlow {
                        table_id: s.table_id,
                        priority: s.priority,
                        cookie: s.cookie,
                        match_: s.match_,
                        instructions: s.instructions,
                    })
                    .collect()
            }
        };
        let changes = reconcile::plan(desired, &actual);
        if !changes.is_empty() {
            let messages: Vec<Message> = changes.iter().map(flow_mod).collect();
            conn.bundle(messages).await.map_err(of_err)?;
            info!(
                node = %node,
                changes = %reconcile::summary(&changes),
                tables = ?reconcile::tables_touched(&changes),
                "flows reconciled"
            );
        }
        self.installed = Some(desired.iter().map(InstalledFlow::from).collect());
        Ok(())
    }
}

/// The FlowMod that carries out one change.
pub fn flow_mod(change: &FlowChange) -> Message {
    let fm = match change {
        FlowChange::Add(f) => FlowMod {
            command: FlowModCommand::Add,
            table_id: f.table_id,
            priority: f.priority,
            cookie: f.cookie,
            match_: f.match_.clone(),
            instructions: f.instructions.clone(),
            ..FlowMod::default()
        },
        FlowChange::Modify(f) => FlowMod {
            command: FlowModCommand::ModifyStrict,
            table_id: f.table_id,
            priority: f.priority,
            cookie: f.cookie,
            match_: f.match_.clone(),
            instructions: f.instructions.clone(),
            ..FlowMod::default()
        },
        FlowChange::Delete {
            table_id,
            priority,
            match_,
        } => FlowMod {
            command: FlowModCommand::DeleteStrict,
            table_id: *table_id,
            priority: *priority,
            match_: match_.clone(),
            out_port: port::ANY,
            out_group: port::GROUP_ANY,
            ..FlowMod::default()
        },
    };
    Message::FlowMod(fm)
}
