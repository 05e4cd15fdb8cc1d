//! Reconciliation plans: what to change on a switch so it holds exactly the desired flows.
//!
//! Owns: the difference between desired flows and the flows a switch reports, as a list of
//! changes that touches nothing already right. A pure function; sending the changes (in
//! one bundle) is the node agent's job.
//!
//! A flow is identified the way OpenFlow identifies it: (table, priority, match). An entry
//! whose instructions differ is modified in place (MODIFY_STRICT keeps its counters); one
//! whose cookie differs is re-added (a modify cannot change the cookie); one the switch has
//! but the controller does not want is deleted strictly. An unchanged flow is never touched,
//! so a controller restart leaves every counter running.

use std::collections::{HashMap, HashSet};

use openflow::{Instruction, Match};

use crate::compiler::Flow;
use crate::pipeline::Table;

/// A flow as read back from a switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledFlow {
    /// OpenFlow table id (the switch may hold flows in tables we do not use).
    pub table_id: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie.
    pub cookie: u64,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl From<&Flow> for InstalledFlow {
    fn from(f: &Flow) -> InstalledFlow {
        InstalledFlow {
            table_id: f.table.id(),
            priority: f.priority,
            cookie: f.cookie,
            match_: f.match_.clone(),
            instructions: f.instructions.clone(),
        }
    }
}

/// One change to a switch's flow tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowChange {
    /// Add a flow that is missing (or replace one whose cookie is wrong).
    Add(InstalledFlow),
    /// Replace the instructions of a flow in place.
    Modify(InstalledFlow),
    /// Delete exactly this (table, priority, match).
    Delete {
        /// Table id.
        table_id: u8,
        /// Priority.
        priority: u16,
        /// Match.
        match_: Match,
    },
}

type Key<'a> = (u8, u16, &'a Match);

/// The changes that turn `actual` into `desired`. Deletions come first, so a bundle never
/// briefly holds both an old and a new flow for one purpose. Output order follows the
/// inputs' order, so equal inputs give equal plans.
pub fn plan(desired: &[Flow], actual: &[InstalledFlow]) -> Vec<FlowChange> {
    let want: HashSet<Key<'_>> = desired
        .iter()
        .map(|f| (f.table.id(), f.priority, &f.match_))
        .collect();
    let have: HashMap<Key<'_>, &InstalledFlow> = actual
        .iter()
        .map(|f| ((f.table_id, f.priority, &f.match_), f))
        .collect();
    let mut changes: Vec<FlowChange> = actual
        .iter()
        .filter(|f| !want.contains(&(f.table_id, f.priority, &f.match_)))
        .map(|f| FlowChange::Delete {
            table_id: f.table_id,
            priority: f.priority,
            match_: f.match_.clone(),
        })
        .collect();
    for flow in desired {
        let wanted = InstalledFlow::from(flow);
        match have.get(&(wanted.table_id, wanted.priority, &wanted.match_)) {
            None => changes.push(FlowChange::Add(wanted)),
            Some(h) if h.cookie != wanted.cookie => changes.push(FlowChange::Add(wanted)),
            Some(h) if h.instructions != wanted.instructions => {
                changes.push(FlowChange::Modify(wanted))
            }
            Some(_) => {}
        }
    }
    changes
}

/// A short account of a plan for logs: `+3 ~1 -2`.
pub fn summary(changes: &[FlowChange]) -> String {
    let count = |f: fn(&FlowChange) -> bool| changes.iter().filter(|c| f(c)).count();
    format!(
        "+{} ~{} -{}",
        count(|c| matches!(c, FlowChange::Add(_))),
        count(|c| matches!(c, FlowChange::Modify(_))),
        count(|c| matches!(c, FlowChange::Delete { .. })),
    )
}

/// The tables a plan touches, for logs.
pub fn tables_touched(changes: &[FlowChange]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = changes
        .iter()
        .map(|c| match c {
            FlowChange::Add(f) | FlowChange::Modify(f) => f.table_id,
            FlowChange::Delete { table_id, .. } => *table_id,
        })
        .map(|id| Table::from_id(id).map(Table::name).unwrap_or("foreign"))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use openflow::{Action, Field, MatchField};

    fn flow(table: Table, priority: u16, cookie: u64, port: u32, out: u32) -> Flow {
        Flow {
            table,
            priority,
            cookie,
            match_: Match::new()
                .with(MatchField::u32(Field::InPort, port))
                .unwrap(),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(out)])],
        }
    }

    #[test]
    fn an_unchanged_switch_needs_no_change() {
        let desired = vec![
            flow(Table::Classifier, 10, 1, 1, 2),
            flow(Table::Output, 0, 1, 2, 1),
        ];
        let actual: Vec<InstalledFlow> = desired.iter().map(InstalledFlow::from).collect();
        assert!(plan(&desired, &actual).is_empty());
    }

    #[test]
    fn only_what_differs_changes() {
        let keep = flow(Table::Classifier, 10, 1, 1, 2);
        let retarget = flow(Table::Classifier, 10, 1, 3, 4);
        let recookie = flow(Table::Classifier, 10, 9, 5, 6);
        let added = flow(Table::Output, 0, 1, 7, 8);
        let stale = flow(Table::Output, 5, 1, 9, 9);
        let desired = vec![
            keep.clone(),
            retarget.clone(),
            recookie.clone(),
            added.clone(),
        ];
        let mut actual: Vec<InstalledFlow> = [&keep, &stale].map(InstalledFlow::from).to_vec();
        let mut old_target = InstalledFlow::from(&retarget);
        old_target.instructions = vec![];
        actual.push(old_target);
        let mut old_cookie = InstalledFlow::from(&recookie);
        old_cookie.cookie = 1;
        actual.push(old_cookie);

        let changes = plan(&desired, &actual);
        assert_eq!(
            changes,
            vec![
                FlowChange::Delete {
                    table_id: stale.table.id(),
                    priority: 5,
                    match_: stale.match_.clone()
                },
                FlowChange::Modify(InstalledFlow::from(&retarget)),
                FlowChange::Add(InstalledFlow::from(&recookie)),
                FlowChange::Add(InstalledFlow::from(&added)),
            ]
        );
        assert_eq!(summary(&changes), "+2 ~1 -1");
        assert_eq!(tables_touched(&changes), vec!["Classifier", "Output"]);
    }
}
