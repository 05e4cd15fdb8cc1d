//! The model of ovs-vswitchd's OpenFlow 1.3 translation (ofproto-dpif-xlate.c) for the
//! matches and actions a Switchyard pipeline uses.
//!
//! Lookup (lib/classifier.c): the highest-priority flow whose match holds (a field the
//! packet lacks is 0); flows whose actions are `conjunction(id,k/n)` are clauses, never a
//! result: when, at a priority above the best ordinary flow, every clause `1..=n` of an id
//! matches, the table is looked up again with `conj_id=id`, and that flow wins if it is
//! above the ordinary one. No flow: OpenFlow 1.3 table-miss, drop.
//!
//! `ct(table=T)` forks the packet to the connection tracker; the fork resumes in table T
//! once the current pass ends, as `+trk+new` (the only case modelled: a new connection,
//! which is what policy decides on), in the given zone. The original pass goes on untracked.
//! Every `ct` leaves the packet untracked afterwards (OVS clears the conntrack fields), so
//! `ct(commit)` without a table is noted and the pipeline continues with `ct_state=0`.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use openflow::action::{Ct, CtZone};
use openflow::{
    Action, Field, FlowStats, GroupDesc, GroupType, Instruction, Match, Subfield, port,
};

use super::TraceStep;
use super::explain::Context;
use crate::features::{CT_NEW, CT_TRK};

/// Field values of the packet being traced; absent fields are 0.
pub(super) type Packet = BTreeMap<Field, u128>;

/// OVS's limit on resubmit nesting (ofproto-dpif-xlate.c MAX_DEPTH).
const MAX_DEPTH: usize = 64;

pub(super) fn get(p: &Packet, f: Field) -> u128 {
    p.get(&f).copied().unwrap_or(0)
}

/// A copy of the packet sent out of a port.
#[derive(Clone, Debug)]
pub(super) struct Out {
    /// The OpenFlow port (reserved ports included).
    pub port: u32,
    /// The packet as it left (for `tun_dst`).
    pub packet: Packet,
}

/// What the explanations need of one visited table, beside the printed step.
#[derive(Clone, Debug)]
pub(super) struct Visit<'a> {
    /// The table.
    pub table: u8,
    /// The flow that matched; `None` on a table miss.
    pub flow: Option<&'a FlowStats>,
    /// The packet as it was looked up.
    pub packet: Packet,
    /// The flow dropped the packet (no actions, or a table miss).
    pub dropped: bool,
}

/// The outcome of running a packet through the tables.
#[derive(Debug)]
pub(super) struct Run<'a> {
    pub steps: Vec<TraceStep>,
    pub visits: Vec<Visit<'a>>,
    pub outputs: Vec<Out>,
    pub notes: Vec<String>,
    /// Why the translation stopped early, if it did (resubmit depth).
    pub aborted: Option<String>,
}

pub(super) fn run<'a>(ctx: &'a Context<'a>, packet: &Match) -> Run<'a> {
    let mut tables: BTreeMap<u8, Vec<&'a FlowStats>> = BTreeMap::new();
    for f in ctx.input.flows {
        tables.entry(f.table_id).or_default().push(f);
    }
    for flows in tables.values_mut() {
        // Stable: among equal priorities, the dump's order decides (OVS: undefined).
        flows.sort_by_key(|f| std::cmp::Reverse(f.priority));
    }
    let groups = ctx.input.groups.iter().map(|g| (g.group_id, g)).collect();
    let mut e = Engine {
        ctx,
        tables,
        groups,
        run: Run {
            steps: vec![],
            visits: vec![],
            outputs: vec![],
            notes: vec![],
            aborted: None,
        },
        recirc: VecDeque::new(),
        depth: 0,
    };
    let mut pkt: Packet = packet
        .iter()
        .map(|mf| (mf.field, mf.value_u128()))
        .collect();
    e.pipeline(0, &mut pkt);
    while let Some((table, mut p)) = e.recirc.pop_front() {
        if e.run.aborted.is_some() {
            break;
        }
        e.pipeline(table, &mut p);
    }
    e.run
}

struct Engine<'a> {
    ctx: &'a Context<'a>,
    tables: BTreeMap<u8, Vec<&'a FlowStats>>,
    groups: BTreeMap<u32, &'a GroupDesc>,
    run: Run<'a>,
    recirc: VecDeque<(u8, Packet)>,
    depth: usize,
}

/// A lookup's winner.
struct Hit<'a> {
    flow: &'a FlowStats,
    /// The conjunction that led to it: id and the clause flows that matched.
    conj: Option<(u32, Vec<&'a FlowStats>)>,
    /// Other flows of the same priority that match too (OVS's choice among them is
    /// undefined).
    ties: usize,
}

fn conjunctions(f: &FlowStats) -> Vec<(u32, u8, u8)> {
    let mut v = vec![];
    for i in &f.instructions {
        if let Instruction::ApplyActions(acts) | Instruction::WriteActions(acts) = i {
            for a in acts {
                if let Action::Conjunction {
                    id,
                    clause,
                    n_clauses,
                } = a
                {
                    v.push((*id, *clause, *n_clauses));
                }
            }
        }
    }
    v
}

fn holds(f: &FlowStats, p: &Packet) -> bool {
    f.match_.matches(|field| get(p, field))
}

impl<'a> Engine<'a> {
    fn note(&mut self, n: String) {
        if !self.run.notes.contains(&n) {
            self.run.notes.push(n);
        }
    }

    fn lookup(&self, table: u8, p: &Packet) -> Option<Hit<'a>> {
        let flows = self.tables.get(&table)?;
        let ordinary = |p: &Packet| -> Option<(&'a FlowStats, usize)> {
            let mut found: Option<(&'a FlowStats, usize)> = None;
            for f in flows.iter().copied() {
                if let Some((best, ties)) = found {
                    if f.priority < best.priority {
                        break;
                    }
                    if conjunctions(f).is_empty() && holds(f, p) {
                        found = Some((best, ties + 1));
                    }
                } else if conjunctions(f).is_empty() && holds(f, p) {
                    found = Some((f, 0));
                }
            }
            found
        };
        let hard = ordinary(p);
        let hard_pri = hard.map_or(-1, |(f, _)| i32::from(f.priority));
        // Clause flows above the ordinary winner, grouped by priority, highest first.
        let mut soft: BTreeMap<u16, Vec<&'a FlowStats>> = BTreeMap::new();
        for f in flows.iter().copied() {
            if i32::from(f.priority) > hard_pri && !conjunctions(f).is_empty() && holds(f, p) {
                soft.entry(f.priority).or_default().push(f);
            }
        }
        for (_, clauses) in soft.iter().rev() {
            // id → (n, clauses seen, flows)
            let mut by_id: BTreeMap<u32, (u8, u64, Vec<&'a FlowStats>)> = BTreeMap::new();
            for f in clauses {
                for (id, k, n) in conjunctions(f) {
                    let e = by_id.entry(id).or_insert((n, 0, vec![]));
                    if (1..=64).contains(&k) {
                        e.1 |= 1 << (k - 1);
                    }
                    if !e.2.contains(f) {
                        e.2.push(f);
                    }
                }
            }
            for (id, (n, seen, clause_flows)) in by_id {
                let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
                if seen & all != all {
                    continue;
                }
                let mut q = p.clone();
                q.insert(Field::ConjId, u128::from(id));
                if let Some((f, ties)) = ordinary(&q)
                    && i32::from(f.priority) > hard_pri
                {
                    return Some(Hit {
                        flow: f,
                        conj: Some((id, clause_flows)),
                        ties,
                    });
                }
            }
        }
        hard.map(|(flow, ties)| Hit {
            flow,
            conj: None,
            ties,
        })
    }

    /// One pass from `table` to the end of the pipeline.
    fn pipeline(&mut self, table: u8, p: &mut Packet) {
        let mut action_set: Vec<Action> = vec![];
        let mut next = Some(table);
        while let Some(t) = next {
            next = self.table(t, p, &mut action_set);
            if self.run.aborted.is_some() {
                return;
            }
        }
        if !action_set.is_empty() {
            let idx = self.run.steps.len() - 1;
            self.effect(idx, "end of pipeline: the action set runs".into());
            let table = self.run.visits[idx].table;
            self.actions(&action_set, p, idx, table);
        }
    }

    fn effect(&mut self, idx: usize, e: String) {
        self.run.steps[idx].effects.push(e);
    }

    /// Looks `p` up in `table`, applies the flow; returns the `goto_table`, if any.
    fn table(&mut self, table: u8, p: &mut Packet, action_set: &mut Vec<Action>) -> Option<u8> {
        let ctx = self.ctx;
        let hit = self.lookup(table, p);
        let Some(hit) = hit else {
            self.run.steps.push(TraceStep {
                table,
                table_name: ctx.table_name(table),
                flow: "no flow matched: table-miss drops the packet (OpenFlow 1.3)".into(),
                owner: "none".into(),
                effects: vec!["drop".into()],
            });
            self.run.visits.push(Visit {
                table,
                flow: None,
                packet: p.clone(),
                dropped: true,
            });
            return None;
        };
        let flow = hit.flow;
        self.run.steps.push(TraceStep {
            table,
            table_name: ctx.table_name(table),
            flow: ctx.flow_text(flow),
            owner: ctx.owner(flow.cookie),
            effects: vec![],
        });
        self.run.visits.push(Visit {
            table,
            flow: Some(flow),
            packet: p.clone(),
            dropped: flow.instructions.is_empty(),
        });
        let idx = self.run.steps.len() - 1;
        if hit.ties > 0 {
            self.note(format!(
                "table {}: {} other flow(s) of priority {} match as well; OVS picks one of them in an undefined way, the trace took the first dumped",
                ctx.table_name(table),
                hit.ties,
                flow.priority
            ));
        }
        if let Some((id, clauses)) = &hit.conj {
            let parts: Vec<String> = clauses
                .iter()
                .map(|c| format!("{} ({})", ctx.flow_text(c), ctx.owner(c.cookie)))
                .collect();
            self.effect(
                idx,
                format!(
                    "conjunction {id} complete, conj_id={id} matched; clauses: {}",
                    parts.join("; ")
                ),
            );
        }
        if flow.instructions.is_empty() {
            self.effect(idx, "drop".into());
            return None;
        }
        // OpenFlow 1.3 §5.9: instructions run in this order whatever their order in the flow.
        let rank = |i: &Instruction| match i {
            Instruction::Meter(_) => 0,
            Instruction::ApplyActions(_) => 1,
            Instruction::ClearActions => 2,
            Instruction::WriteActions(_) => 3,
            Instruction::WriteMetadata { .. } => 4,
            Instruction::GotoTable(_) => 5,
            Instruction::Unknown { .. } => 6,
        };
        let mut instructions: Vec<&Instruction> = flow.instructions.iter().collect();
        instructions.sort_by_key(|i| rank(i));
        let mut goto = None;
        for i in instructions {
            match i {
                Instruction::ApplyActions(acts) => {
                    self.actions(acts, p, idx, table);
                    if self.run.aborted.is_some() {
                        return None;
                    }
                }
                Instruction::ClearActions => action_set.clear(),
                Instruction::WriteActions(acts) => {
                    self.effect(idx, format!("action set += {} action(s)", acts.len()));
                    action_set.extend(acts.iter().cloned());
                }
                Instruction::WriteMetadata { value, mask } => {
                    let old = get(p, Field::Metadata);
                    let new = (old & !u128::from(*mask)) | (u128::from(*value) & u128::from(*mask));
                    p.insert(Field::Metadata, new);
                    self.effect(idx, format!("metadata = {new:#x}"));
                }
                Instruction::GotoTable(t) => {
                    self.effect(idx, format!("goto_table:{}", ctx.table_name(*t)));
                    goto = Some(*t);
                }
                Instruction::Meter(m) => {
                    self.note(format!(
                        "meter {m} is not modelled: the trace assumes the packet is within its rate"
                    ));
                }
                Instruction::Unknown {
                    instruction_type, ..
                } => self.note(format!(
                    "instruction type {instruction_type} is not modelled and was skipped"
                )),
            }
        }
        goto
    }

    fn actions(&mut self, acts: &[Action], p: &mut Packet, idx: usize, table: u8) {
        let ctx = self.ctx;
        for a in acts {
            if self.run.aborted.is_some() {
                return;
            }
            match a {
                Action::Output { port, .. } => self.output(*port, p, idx),
                Action::OutputReg { src, .. } => {
                    let port = read(p, src) as u32;
                    self.effect(idx, format!("{} = {port}", subfield_text(src)));
                    self.output(port, p, idx);
                }
                Action::SetField(mf) => {
                    let v = mf.value_u128();
                    let new = match &mf.mask {
                        Some(_) => {
                            let m = mf.mask_u128();
                            (get(p, mf.field) & !m) | (v & m)
                        }
                        None => v,
                    };
                    p.insert(mf.field, new);
                    self.effect(
                        idx,
                        format!("{} = {}", mf.field, ctx.value_text(mf.field, new)),
                    );
                }
                Action::RegLoad { dst, value } => {
                    write(p, dst, u128::from(*value));
                    self.effect(
                        idx,
                        format!(
                            "{} = {}",
                            subfield_text(dst),
                            ctx.value_text(dst.field, get(p, dst.field))
                        ),
                    );
                }
                Action::RegMove { src, dst } => {
                    let v = read(p, src);
                    write(p, dst, v);
                    self.effect(
                        idx,
                        format!(
                            "{} = {} ({})",
                            subfield_text(dst),
                            subfield_text(src),
                            ctx.value_text(dst.field, get(p, dst.field))
                        ),
                    );
                }
                Action::Resubmit {
                    in_port,
                    table: t,
                    ct,
                } => {
                    if *ct {
                        self.note("resubmit(,T,ct) looks up with the connection's original tuple; the trace uses the packet's own".into());
                    }
                    if self.depth >= MAX_DEPTH {
                        self.run.aborted = Some(format!(
                            "resubmits nest deeper than {MAX_DEPTH}: OVS drops the packet"
                        ));
                        return;
                    }
                    let target = t.unwrap_or(table);
                    self.effect(idx, format!("resubmit to table {}", ctx.table_name(target)));
                    let saved_in_port = get(p, Field::InPort);
                    if *in_port != port::IN_PORT {
                        p.insert(Field::InPort, u128::from(*in_port));
                    }
                    self.depth += 1;
                    // A resubmitted lookup has its own goto chain; its action set is the
                    // same packet's (OVS keeps one action set per translation).
                    let mut set = vec![];
                    let mut next = Some(target);
                    while let Some(t) = next {
                        next = self.table(t, p, &mut set);
                        if self.run.aborted.is_some() {
                            break;
                        }
                    }
                    self.depth -= 1;
                    if *in_port != port::IN_PORT {
                        p.insert(Field::InPort, saved_in_port);
                    }
                }
                Action::Ct(ct) => self.ct(ct, p, idx),
                Action::CtClear => {
                    for f in ct_fields() {
                        p.remove(&f);
                    }
                    self.effect(idx, "ct_clear: the packet is untracked".into());
                }
                Action::Conjunction { .. } => {}
                Action::Group(id) => self.group(*id, p, idx, table),
                Action::Learn(l) => {
                    self.effect(
                        idx,
                        format!(
                            "learn: would add a flow to table {}",
                            ctx.table_name(l.table_id)
                        ),
                    );
                    self.note(
                        "learn(...) is noted, not applied: the trace does not add the learned flow"
                            .into(),
                    );
                }
                Action::Note(_) => {}
                Action::Controller { .. } | Action::Controller2(_) => {
                    self.output(port::CONTROLLER, p, idx);
                }
                Action::DecTtl => {
                    let ttl = get(p, Field::IpTtl);
                    p.insert(Field::IpTtl, ttl.saturating_sub(1));
                    self.effect(idx, format!("nw_ttl = {}", ttl.saturating_sub(1)));
                }
                Action::SetNwTtl(t) => {
                    p.insert(Field::IpTtl, u128::from(*t));
                    self.effect(idx, format!("nw_ttl = {t}"));
                }
                Action::PushVlan(_) | Action::PopVlan | Action::SetQueue(_) => {
                    self.note(format!("{a:?} is not modelled and was skipped"));
                }
                Action::Experimenter { .. } | Action::Unknown { .. } => {
                    self.note(
                        "an action the codec does not model was skipped (see the flow's text)"
                            .into(),
                    );
                }
            }
        }
    }

    fn output(&mut self, port_no: u32, p: &Packet, idx: usize) {
        let in_port = get(p, Field::InPort) as u32;
        let actual = if port_no == port::IN_PORT {
            in_port
        } else {
            port_no
        };
        if port_no != port::IN_PORT && port_no == in_port {
            self.effect(
                idx,
                format!("output:{port_no} skipped: OVS does not send a packet back out of its in_port unless the action says IN_PORT"),
            );
            return;
        }
        if matches!(
            port_no,
            port::NORMAL | port::FLOOD | port::ALL | port::TABLE | port::ANY
        ) {
            self.note(format!(
                "output to the reserved port {} is not modelled beyond the port itself",
                self.ctx.port_name(port_no)
            ));
        }
        let tun = (actual == crate::pipeline::TUNNEL_OFPORT).then(|| {
            format!(
                " with tun_dst={}",
                Ipv4Addr::from(get(p, Field::TunDst) as u32)
            )
        });
        self.effect(
            idx,
            format!(
                "output to port {actual} ({}){}",
                self.ctx.port_name(actual),
                tun.unwrap_or_default()
            ),
        );
        self.run.outputs.push(Out {
            port: actual,
            packet: p.clone(),
        });
    }

    fn ct(&mut self, ct: &Ct, p: &mut Packet, idx: usize) {
        let zone = match ct.zone {
            CtZone::Value(z) => u128::from(z),
            CtZone::Field(sf) => read(p, &sf),
        };
        let mut what = vec![format!("zone={zone}")];
        if ct.commit {
            what.push("commit".into());
        }
        if ct.nat.is_some() {
            what.push("nat".into());
        }
        // A bare `nat` (the Conntrack table's) only re-applies a connection's NAT, and a new
        // connection has none: nothing to note. A `nat(src|dst=...)` changes addresses.
        if let Some(nat) = ct.nat.as_ref().filter(|n| n.kind.is_some()) {
            self.note(format!(
                "ct(nat{}) is noted, not applied: the trace keeps the packet's addresses",
                match nat.kind {
                    Some(openflow::NatKind::Src) => "(src=...)",
                    Some(openflow::NatKind::Dst) => "(dst=...)",
                    None => "",
                }
            ));
        }
        if !ct.actions.is_empty() {
            what.push("exec(...)".into());
            self.note(
                "ct(exec(...)) sets the connection's mark or label; the trace does not model them"
                    .into(),
            );
        }
        match ct.table {
            Some(t) => {
                let mut fork = p.clone();
                fork.insert(Field::CtState, u128::from(CT_NEW | CT_TRK));
                fork.insert(Field::CtZone, zone);
                self.recirc.push_back((t, fork));
                self.effect(
                    idx,
                    format!(
                        "ct({}, table={}): conntrack sees a new connection; resumes in table {} with ct_state=+new+trk",
                        what.join(", "),
                        self.ctx.table_name(t),
                        self.ctx.table_name(t)
                    ),
                );
                self.note("conntrack is modelled for a new connection only: after ct(table=...) the packet is +trk+new (what `ofproto/trace` assumes by default); established and related packets bypass policy and are not traced".into());
            }
            None => {
                let verb = if ct.commit {
                    "commits the new connection to conntrack (its replies will be +est)"
                } else {
                    "sends the packet through conntrack"
                };
                self.effect(idx, format!("ct({}): {verb}", what.join(", ")));
            }
        }
        // OVS clears the packet's conntrack state after every ct action.
        for f in ct_fields() {
            p.remove(&f);
        }
    }

    fn group(&mut self, id: u32, p: &mut Packet, idx: usize, table: u8) {
        let Some(g) = self.groups.get(&id).copied() else {
            self.effect(
                idx,
                format!("group:{id} does not exist on the switch: no output"),
            );
            self.note(format!(
                "group {id} is not on the switch; OVS drops what is sent to it"
            ));
            return;
        };
        let buckets: Vec<(usize, &openflow::Bucket)> = match g.group_type {
            GroupType::All => g.buckets.iter().enumerate().collect(),
            GroupType::Select => {
                let live: Vec<(usize, &openflow::Bucket)> = g
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.weight > 0)
                    .collect();
                if let Some((i, _)) = live.first() {
                    self.note(format!(
                        "group {id} (select) has {} live bucket(s): the switch picks one by hashing the packet's fields; the trace follows bucket {i}",
                        live.len()
                    ));
                }
                live.into_iter().take(1).collect()
            }
            GroupType::Indirect => g.buckets.iter().enumerate().take(1).collect(),
            GroupType::FastFailover => {
                self.note(format!(
                    "group {id} (fast_failover): the trace assumes the first bucket's watched port is live"
                ));
                g.buckets.iter().enumerate().take(1).collect()
            }
        };
        if buckets.is_empty() {
            self.effect(idx, format!("group:{id} has no live bucket: drop"));
            return;
        }
        for (i, b) in buckets {
            self.effect(idx, format!("group:{id} bucket {i}"));
            // Each bucket acts on its own copy of the packet.
            let mut copy = p.clone();
            self.actions(&b.actions, &mut copy, idx, table);
        }
    }
}

fn ct_fields() -> [Field; 4] {
    [Field::CtState, Field::CtZone, Field::CtMark, Field::CtLabel]
}

fn bits_mask(n: u16) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

fn read(p: &Packet, sf: &Subfield) -> u128 {
    (get(p, sf.field) >> sf.ofs) & bits_mask(sf.n_bits)
}

fn write(p: &mut Packet, sf: &Subfield, v: u128) {
    let m = bits_mask(sf.n_bits) << sf.ofs;
    let old = get(p, sf.field);
    p.insert(sf.field, (old & !m) | ((v << sf.ofs) & m));
}

fn subfield_text(sf: &Subfield) -> String {
    if sf.ofs == 0 && usize::from(sf.n_bits) == sf.field.nxm_bits() {
        sf.field.to_string()
    } else {
        format!(
            "{}[{}..{}]",
            sf.field,
            sf.ofs,
            sf.ofs + sf.n_bits.saturating_sub(1)
        )
    }
}
