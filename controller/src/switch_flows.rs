//! Keeping one switch's flow tables equal to the compiler's output.
//!
//! Owns: what the controller believes a connected br-int holds, reading it back from the
//! switch when it does not know (a new connection, a controller restart, a flow removed
//! behind its back, or [`REREAD_INTERVAL`] passed), and sending the reconciliation plan as
//! one atomic, ordered bundle — a node never sees half a change.
//!
//! Flows are installed with `send_flow_rem`, so the switch reports every deletion. A
//! FLOW_REMOVED for a flow the controller still wants means somebody else deleted it (an
//! operator's `ovs-ofctl del-flows`, a script): the next sync reads the switch back and puts
//! it back. Removals the controller made itself are no longer in its view by the time their
//! notice is read, and cost nothing.

use std::time::{Duration, Instant};

use openflow::message::flow_mod::flags;
use openflow::{FlowMod, FlowModCommand, FlowRemoved, FlowStatsRequest, Message, port};
use tracing::info;

use crate::Error;
use crate::compiler::Flow;
use crate::reconcile::{self, FlowChange, InstalledFlow};

/// How often the controller reads a switch's flows back even when nothing told it to: a
/// safety net for changes that leave no notice (a flow modified in place by someone else).
pub const REREAD_INTERVAL: Duration = Duration::from_secs(300);

/// The flows a switch is known to hold. `None` until read back from the switch.
#[derive(Debug, Default)]
pub struct SwitchFlows {
    installed: Option<Vec<InstalledFlow>>,
    read_at: Option<Instant>,
}

impl SwitchFlows {
    /// Takes note of a FLOW_REMOVED from the switch. Returns true when it removed a flow
    /// the controller still wants, which makes the next [`sync`](Self::sync) read the
    /// switch back.
    pub fn note_removed(&mut self, removed: &FlowRemoved) -> bool {
        let wanted = self.installed.as_ref().is_some_and(|flows| {
            flows.iter().any(|f| {
                f.table_id == removed.table_id
                    && f.priority == removed.priority
                    && f.match_ == removed.match_
            })
        });
        if wanted {
            self.installed = None;
        }
        wanted
    }

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
        if self.read_at.is_none_or(|t| t.elapsed() >= REREAD_INTERVAL) {
            self.installed = None;
        }
        let actual = match self.installed.take() {
            Some(flows) => flows,
            None => {
                self.read_at = Some(Instant::now());
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
    let install = |command, f: &InstalledFlow, flags| FlowMod {
        command,
        flags,
        table_id: f.table_id,
        priority: f.priority,
        cookie: f.cookie,
        match_: f.match_.clone(),
        instructions: f.instructions.clone(),
        ..FlowMod::default()
    };
    let fm = match change {
        FlowChange::Add(f) => install(FlowModCommand::Add, f, flags::SEND_FLOW_REM),
        // The flags of a flow are its own: a modify leaves them (and the counters) alone.
        FlowChange::Modify(f) => install(FlowModCommand::ModifyStrict, f, 0),
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
