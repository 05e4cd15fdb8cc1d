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
//! `ct(commit)` without a table is noted and the pipeline continues with `ct_state=0`. As
//! ofproto/trace (ofproto-dpif-trace.c) does, the resumed fork carries the `nat(src|dst=...)`
//! of its `ct` (the range's first address and port) and, with `commit`, the `ct_mark` its
//! `exec(...)` sets.
//!
//! Select groups (ofproto-dpif.c `group_set_selection_method`, ofproto-dpif-xlate.c
//! `pick_dp_hash_select_group`): a group without a selection method whose buckets fit 256
//! hash values uses `dp_hash`: the datapath hashes the packet (`hash(sym_l4(0))`), recirculates,
//! and the bucket is `hash_map[dp_hash & mask]`, the map spread over the buckets by weight
//! with Webster's method. ofproto/trace follows a bucket only when the packet carries
//! `dp_hash`; so does this model: given `dp_hash=N` it takes the bucket the switch would,
//! without it the first bucket of nonzero weight and the `dp_hash` value that selects it,
//! reported with the packet so that ofproto/trace follows the same bucket. A group needing
//! more values uses OVS's default method, computed in the slow path, which the model
//! computes too (`ovs_hash::symmetric_l4`, `ovs_hash::best_bucket`): ofproto/trace then
//! takes the same bucket with no `dp_hash` given.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use openflow::action::{Ct, CtZone, NxEnum};
use openflow::{
    Action, Field, FlowStats, GroupDesc, GroupType, Instruction, Match, MatchField, Subfield, port,
};

use super::TraceStep;
use super::explain::Context;
use super::ovs_hash;
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
    /// The visit (index in `steps`/`visits`) whose flow output it.
    pub visit: usize,
}

/// A bucket a select group chose.
#[derive(Clone, Debug)]
pub(super) struct GroupChoice {
    /// The group.
    pub group_id: u32,
    /// The visit whose flow sent the packet to the group.
    pub visit: usize,
    /// The bucket followed (its index in the group).
    pub bucket: usize,
    /// Each live bucket's endpoint (reg3/reg4 of a Service bucket), by index.
    pub endpoints: Vec<(usize, Option<(Ipv4Addr, u16)>)>,
}

/// The link a `multipath` action picked.
#[derive(Clone, Copy, Debug)]
pub(super) struct MultipathChoice {
    /// The visit whose flow ran it.
    pub visit: usize,
    /// The link written into the destination.
    pub link: u32,
    /// How many links there were.
    pub n_links: u32,
    /// The link is the one OVS computes (false: link 0 assumed).
    pub computed: bool,
}

/// An address translation `ct(nat(...))` applied to the resumed packet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Translation {
    /// The visit whose flow ran the `ct`.
    pub visit: usize,
    /// Destination (DNAT) or source (SNAT).
    pub dst: bool,
    /// The new address.
    pub addr: Ipv4Addr,
    /// The new L4 port, if the NAT names one.
    pub port: Option<u16>,
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
    /// The buckets select groups chose, in order.
    pub choices: Vec<GroupChoice>,
    /// The links `multipath` actions picked, in order.
    pub multipaths: Vec<MultipathChoice>,
    /// The NATs conntrack applied, in order.
    pub translations: Vec<Translation>,
    /// The `dp_hash` the run used (given with the packet, or chosen for a dp_hash select
    /// group): what ofproto/trace needs to follow the same buckets.
    pub dp_hash: Option<u32>,
}

pub(super) fn run<'a>(ctx: &'a Context<'a>, packet: &Match, dp_hash: Option<u32>) -> Run<'a> {
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
            choices: vec![],
            multipaths: vec![],
            translations: vec![],
            dp_hash,
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
        // A flow without instructions drops the packet, except under a resubmit, which
        // just returns to its caller.
        let dropped = flow.instructions.is_empty() && self.depth == 0;
        self.run.visits.push(Visit {
            table,
            flow: Some(flow),
            packet: p.clone(),
            dropped,
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
            let what = if dropped {
                "drop"
            } else {
                "no actions: the resubmit returns"
            };
            self.effect(idx, what.into());
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
                    self.effect(idx, learned_flow(ctx, l, p));
                    self.note(format!(
                        "learn(...) is modelled for the first connection: the trace shows the flow it adds to table {} but does not add it (ofproto/trace does not either); a later connection within its idle_timeout finds it there",
                        ctx.table_name(l.table_id)
                    ));
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
                Action::Multipath(m) => self.multipath(m, p, idx),
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
            visit: idx,
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
        // A bare `nat` (the Conntrack table's) only re-applies a connection's NAT, and a new
        // connection has none. A `nat(src|dst=...)` translates the new connection: the
        // resumed packet carries the range's first address (and port), as ofproto/trace
        // simulates it.
        let translation = ct.nat.as_ref().and_then(|nat| {
            let dst = match nat.kind? {
                openflow::NatKind::Dst => true,
                openflow::NatKind::Src => false,
            };
            let addr = match nat.addr_min? {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => return None,
            };
            Some(Translation {
                visit: idx,
                dst,
                addr,
                port: nat.port_min,
            })
        });
        match (&ct.nat, translation) {
            (None, _) => {}
            (Some(_), None) => what.push("nat".into()),
            (Some(_), Some(t)) => what.push(format!(
                "nat({}={}{})",
                if t.dst { "dst" } else { "src" },
                t.addr,
                t.port.map(|p| format!(":{p}")).unwrap_or_default()
            )),
        }
        // exec(set_field:V->ct_mark): the committed connection's mark, which the resumed
        // packet sees (ofproto/trace too). Without commit OVS refuses exec.
        let mut mark: Option<u128> = None;
        for a in &ct.actions {
            match a {
                Action::SetField(mf) if mf.field == Field::CtMark => {
                    let v = mf.value_u128();
                    let m = if mf.mask.is_some() {
                        mf.mask_u128()
                    } else {
                        u128::from(u32::MAX)
                    };
                    let old = mark.unwrap_or_else(|| get(p, Field::CtMark));
                    mark = Some((old & !m) | (v & m));
                }
                Action::RegLoad { dst, value } if dst.field == Field::CtMark => {
                    let mut q = Packet::new();
                    q.insert(Field::CtMark, mark.unwrap_or_else(|| get(p, Field::CtMark)));
                    write(&mut q, dst, u128::from(*value));
                    mark = Some(get(&q, Field::CtMark));
                }
                _ => self.note(
                    "ct(exec(...)) other than setting ct_mark is not modelled (ct_label is not)"
                        .into(),
                ),
            }
        }
        if let Some(m) = mark {
            what.push(format!("exec(ct_mark={m:#x})"));
        }
        match ct.table {
            Some(t) => {
                let mut fork = p.clone();
                fork.insert(Field::CtState, u128::from(CT_NEW | CT_TRK));
                fork.insert(Field::CtZone, zone);
                if let Some(m) = mark.filter(|_| ct.commit) {
                    fork.insert(Field::CtMark, m);
                }
                let mut resumed = vec!["ct_state=+new+trk".to_owned()];
                if let Some(tr) = translation {
                    let (addr_field, port_field) = l4_fields(p, tr.dst);
                    let side = if tr.dst { "dst" } else { "src" };
                    fork.insert(addr_field, u128::from(u32::from(tr.addr)));
                    resumed.push(format!("nw_{side}={}", tr.addr));
                    if let (Some(port), Some(pf)) = (tr.port, port_field) {
                        fork.insert(pf, u128::from(port));
                        resumed.push(format!("tp_{side}={port}"));
                    }
                    self.run.translations.push(tr);
                }
                if let Some(m) = mark.filter(|_| ct.commit) {
                    resumed.push(format!("ct_mark={m:#x}"));
                }
                self.recirc.push_back((t, fork));
                let verb = match (ct.commit, translation) {
                    (true, Some(tr)) => format!(
                        "conntrack commits the new connection, {}NATed to {}{}",
                        if tr.dst { "D" } else { "S" },
                        tr.addr,
                        tr.port.map(|p| format!(":{p}")).unwrap_or_default()
                    ),
                    (true, None) => "conntrack commits the new connection".to_owned(),
                    (false, _) => "conntrack sees a new connection".to_owned(),
                };
                self.effect(
                    idx,
                    format!(
                        "ct({}, table={}): {verb}; resumes in table {} with {}",
                        what.join(", "),
                        self.ctx.table_name(t),
                        self.ctx.table_name(t),
                        resumed.join(", ")
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
            GroupType::Select => match self.select(id, g, idx, p) {
                Some(i) => vec![(i, &g.buckets[i])],
                None => vec![],
            },
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

    /// The bucket a select group follows, as the switch chooses it (see the module docs).
    fn select(&mut self, id: u32, g: &GroupDesc, idx: usize, p: &Packet) -> Option<usize> {
        let ctx = self.ctx;
        let live: Vec<usize> = (0..g.buckets.len())
            .filter(|&i| g.buckets[i].weight > 0)
            .collect();
        let first = *live.first()?;
        let endpoints: Vec<(usize, Option<(Ipv4Addr, u16)>)> = live
            .iter()
            .map(|&i| (i, bucket_endpoint(&g.buckets[i])))
            .collect();
        let listed: Vec<String> = endpoints
            .iter()
            .map(|(i, ep)| match ep {
                Some((ip, port)) => format!("[{i}] {}", ctx.endpoint_text(*ip, *port)),
                None => format!("[{i}]"),
            })
            .collect();
        let what = match ctx.group_service(id) {
            Some(svc) => format!("Service {svc}: {} endpoint(s)", live.len()),
            None => format!("{} live bucket(s)", live.len()),
        };
        self.effect(
            idx,
            format!("group:{id} (select, {what}): {}", listed.join(", ")),
        );
        let weights: Vec<u16> = g.buckets.iter().map(|b| b.weight).collect();
        let chosen = match dp_hash_map(&weights) {
            Some(map) => {
                let mask = map.len() as u32 - 1;
                let (bucket, hash) = match self.run.dp_hash.filter(|h| *h != 0) {
                    Some(h) => (map[(h & mask) as usize], h),
                    None => {
                        // The first live bucket, and the smallest nonzero dp_hash selecting
                        // it (0 means "not computed yet" to OVS).
                        let slot = map.iter().position(|&b| b == first).unwrap_or(0) as u32;
                        let h = if slot == 0 { mask + 1 } else { slot };
                        self.run.dp_hash = Some(h);
                        self.note(format!(
                            "the switch picks a select group's bucket by a hash of the packet (dp_hash); the trace assumed dp_hash={h:#x} (bucket {first} of group {id}): add dp_hash=N to the packet to follow another bucket"
                        ));
                        (first, h)
                    }
                };
                self.effect(
                    idx,
                    format!(
                        "the switch picks by hashing the packet (dp_hash over {} values); with dp_hash={hash:#x} it takes bucket {bucket}",
                        map.len()
                    ),
                );
                bucket
            }
            None => match default_select(p, &weights) {
                Some((bucket, basis, score)) => {
                    self.effect(
                        idx,
                        format!(
                            "the switch picks by its default select method (more than 256 hash values): the symmetric_l4 hash of the packet is {basis:#010x}, bucket {bucket} scores highest ({score})"
                        ),
                    );
                    bucket
                }
                None => {
                    self.note(format!(
                        "group {id} uses OVS's default select method, a hash of the flow the trace computes for IPv4 only; it follows bucket {first}, and ofproto/trace may show another"
                    ));
                    self.effect(
                        idx,
                        format!(
                            "the switch picks by hashing the flow; the trace follows bucket {first}"
                        ),
                    );
                    first
                }
            },
        };
        self.run.choices.push(GroupChoice {
            group_id: id,
            visit: idx,
            bucket: chosen,
            endpoints,
        });
        Some(chosen)
    }

    /// NXAST_MULTIPATH: the switch hashes the packet's fields with the basis and maps the
    /// hash to one of `n_links` links, written into a subfield: computed as OVS does
    /// (`ovs_hash`) for the field sets of IPv4 packets it models, else link 0 with a note.
    fn multipath(&mut self, m: &openflow::Multipath, p: &mut Packet, idx: usize) {
        let proto = get(p, Field::IpProto) as u8;
        let (sport, dport) = match proto {
            6 => (Field::TcpSrc, Field::TcpDst),
            17 => (Field::UdpSrc, Field::UdpDst),
            132 => (Field::SctpSrc, Field::SctpDst),
            _ => (Field::TcpSrc, Field::TcpDst),
        };
        let tuple = ovs_hash::FiveTuple {
            src: Ipv4Addr::from(get(p, Field::Ipv4Src) as u32),
            dst: Ipv4Addr::from(get(p, Field::Ipv4Dst) as u32),
            proto,
            src_port: get(p, sport) as u16,
            dst_port: get(p, dport) as u16,
        };
        let hash = (get(p, Field::EthType) == 0x0800)
            .then(|| ovs_hash::flow_hash_fields(m.fields, &tuple, m.basis))
            .flatten();
        let link = match hash {
            Some(h) => {
                let link = ovs_hash::multipath_link(h, m.algorithm, m.n_links, m.arg);
                self.effect(
                    idx,
                    format!(
                        "multipath: the {} hash (basis {}) of the packet is {h:#010x}; {} over {} links picks link {link} into {}",
                        m.fields.name(),
                        m.basis,
                        m.algorithm.name(),
                        m.n_links,
                        subfield_text(&m.dst)
                    ),
                );
                link
            }
            None => {
                self.effect(
                    idx,
                    format!(
                        "multipath: the switch hashes the packet ({}) over {} links into {}; the trace assumes link 0",
                        m.fields.name(),
                        m.n_links,
                        subfield_text(&m.dst)
                    ),
                );
                self.note(format!(
                    "multipath's {} hash of this packet is one the trace does not compute (it computes symmetric_l3l4 and symmetric_l3l4+udp of IPv4 packets): it follows link 0, and ofproto/trace may pick another",
                    m.fields.name()
                ));
                0
            }
        };
        write(p, &m.dst, u128::from(link));
        self.run.multipaths.push(MultipathChoice {
            visit: idx,
            link,
            n_links: m.n_links,
            computed: hash.is_some(),
        });
    }
}

/// The most hash values a dp_hash select group has in ovs-vswitchd 3.1: measured with
/// ofproto/trace, 256 buckets of equal weight still use `hash(sym_l4(0))` and 257 the
/// default method.
const MAX_DP_HASH_VALUES: u64 = 256;

/// The bucket a select group's default method picks for this packet (ofproto-dpif-xlate.c
/// `xlate_default_select_group`): `ovs_hash::best_bucket` with the packet's
/// `flow_hash_symmetric_l4`; (bucket, hash, score). `None` for a packet the hash is not
/// computed for (not IPv4).
fn default_select(p: &Packet, weights: &[u16]) -> Option<(usize, u32, u32)> {
    if get(p, Field::EthType) != 0x0800 {
        return None;
    }
    let proto = get(p, Field::IpProto) as u8;
    let (sport, dport) = match proto {
        6 => (get(p, Field::TcpSrc), get(p, Field::TcpDst)),
        132 => (get(p, Field::SctpSrc), get(p, Field::SctpDst)),
        _ => (0, 0),
    };
    let mac = |f: Field| {
        let b = (get(p, f) as u64).to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    };
    let tuple = ovs_hash::FiveTuple {
        src: Ipv4Addr::from(get(p, Field::Ipv4Src) as u32),
        dst: Ipv4Addr::from(get(p, Field::Ipv4Dst) as u32),
        proto,
        src_port: sport as u16,
        dst_port: dport as u16,
    };
    let basis = ovs_hash::symmetric_l4(&tuple, mac(Field::EthSrc), mac(Field::EthDst));
    let (bucket, score) = ovs_hash::best_bucket(basis, weights)?;
    Some((bucket, basis, score))
}

/// OVS's dp_hash table for a select group with these bucket weights (ofproto-dpif.c
/// `group_setup_dp_hash_table`, at most [`MAX_DP_HASH_VALUES`] values): `map[hash & (len -
/// 1)]` is the bucket. `None` when the switch uses its default method instead (no weight,
/// or more values needed).
pub(super) fn dp_hash_map(weights: &[u16]) -> Option<Vec<usize>> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let min = weights.iter().copied().filter(|w| *w > 0).min()?;
    if total == 0 {
        return None;
    }
    let min_slots = total.div_ceil(u64::from(min));
    let n_hash = min_slots.next_power_of_two().max(16);
    if n_hash > MAX_DP_HASH_VALUES {
        return None;
    }
    // Webster's method: each value goes to the bucket with the highest weight / divisor
    // (the first on a tie), whose divisor then grows by two.
    let mut divisor: Vec<u32> = vec![1; weights.len()];
    let mut value: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
    let mut map = Vec::with_capacity(n_hash as usize);
    for _ in 0..n_hash {
        let mut winner = 0;
        for i in 1..weights.len() {
            if value[i] > value[winner] {
                winner = i;
            }
        }
        divisor[winner] += 2;
        value[winner] = f64::from(weights[winner]) / f64::from(divisor[winner]);
        map.push(winner);
    }
    Some(map)
}

/// The endpoint a Service bucket names: the address and port its `ct(nat(dst=...))` DNATs
/// to, or (a port with session affinity) what it loads into reg3 (address) and reg4 (port).
pub(super) fn bucket_endpoint(b: &openflow::Bucket) -> Option<(Ipv4Addr, u16)> {
    use crate::pipeline::{REG_ENDPOINT_IP, REG_ENDPOINT_PORT};
    let mut p = Packet::new();
    for a in &b.actions {
        match a {
            Action::Ct(ct) => {
                if let Some(openflow::action::Nat {
                    kind: Some(openflow::NatKind::Dst),
                    addr_min: Some(std::net::IpAddr::V4(ip)),
                    port_min: Some(port),
                    ..
                }) = &ct.nat
                {
                    return Some((*ip, *port));
                }
            }
            Action::SetField(mf) => {
                p.insert(mf.field, mf.value_u128());
            }
            Action::RegLoad { dst, value } => write(&mut p, dst, u128::from(*value)),
            _ => {}
        }
    }
    let ip = p.get(&Field::Reg(REG_ENDPOINT_IP))?;
    let port = p.get(&Field::Reg(REG_ENDPOINT_PORT))?;
    Some((Ipv4Addr::from(*ip as u32), *port as u16))
}

/// The address and L4 port fields a NAT rewrites.
fn l4_fields(p: &Packet, dst: bool) -> (Field, Option<Field>) {
    let port = match (get(p, Field::IpProto), dst) {
        (6, true) => Some(Field::TcpDst),
        (6, false) => Some(Field::TcpSrc),
        (17, true) => Some(Field::UdpDst),
        (17, false) => Some(Field::UdpSrc),
        (132, true) => Some(Field::SctpDst),
        (132, false) => Some(Field::SctpSrc),
        _ => None,
    };
    let addr = if dst { Field::Ipv4Dst } else { Field::Ipv4Src };
    (addr, port)
}

/// The flow a `learn` would add, with this packet's values.
fn learned_flow(ctx: &Context<'_>, l: &openflow::action::Learn, p: &Packet) -> String {
    use openflow::action::{LearnSpec, LearnSrc};
    let value = |src: &LearnSrc| match src {
        LearnSrc::Field(sf) => read(p, sf),
        LearnSrc::Value(bytes) => bytes
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)),
    };
    let (mut learned, mut actions) = (Match::new(), vec![]);
    for spec in &l.specs {
        match spec {
            LearnSpec::Match { src, dst } => {
                let v = value(src) & bits_mask(dst.n_bits);
                let whole = dst.ofs == 0 && usize::from(dst.n_bits) == dst.field.nxm_bits();
                let mf = if whole {
                    MatchField::int(dst.field, v)
                } else {
                    let m = bits_mask(dst.n_bits) << dst.ofs;
                    MatchField::int_masked(dst.field, v << dst.ofs, m)
                };
                // A field the codec cannot hold at that width is shown as a register would be.
                if learned.insert(mf).is_err() {
                    actions.push(format!("(match {}={v:#x})", subfield_text(dst)));
                }
            }
            LearnSpec::Load { src, dst } => actions.push(format!(
                "{}={}",
                subfield_text(dst),
                ctx.value_text(dst.field, value(src) & bits_mask(dst.n_bits))
            )),
            LearnSpec::Output { src } => actions.push(format!("output:{}", read(p, src))),
        }
    }
    format!(
        "learn: adds to table {} (priority {}, idle_timeout {}s): {} → {}",
        ctx.table_name(l.table_id),
        l.priority,
        l.idle_timeout,
        openflow::text::format_match(&learned, 32768),
        actions.join(", ")
    )
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
