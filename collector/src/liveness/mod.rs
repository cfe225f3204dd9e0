//! Liveness: the pure state machine that turns births, states and heartbeats into node
//! states (`unknown → online ⇄ late → offline`, `stopped`, `maintenance`) and transitions.
//!
//! No I/O and no clock: every entry point takes `now` (the collector's clock, [`UnixMillis`]) and
//! returns the [`Transition`]s it caused, which the caller commits to the store before it
//! announces them anywhere.
//!
//! # Rules
//! - A *live* message (live birth, state `online`, heartbeat or fault/test with
//!   `replay: false`) proves the node is reachable now: the node becomes `online`.
//! - `late` after `late_factor` × the node's heartbeat interval without live evidence,
//!   `offline` after `offline_factor` × the interval (1.5 and 3 by default). A node that was
//!   never heard live (`unknown`) goes straight to `offline` at the offline deadline.
//! - A `state: offline` whose boot is the node's current boot takes the node `offline` at once
//!   (`reason: lost`, the Will) or `stopped` (`reason: shutdown`); with a foreign boot it is
//!   a stale Will from an older connection and is ignored. This also holds for retained
//!   states: a retained `offline` of the current boot is the broker's own record of the loss.
//! - Replayed messages (`replay: true`) never count as live and never end an outage; they
//!   only advance the sequence counter of the current boot.
//! - A live message with a new boot is a restart: the boot is recorded, the restart counted
//!   and the sequence counter starts again.
//! - Retained births and `online` states describe the node (kind, name, interval, boot) but
//!   prove nothing about now: they never make a node `online`.
//!
//! # Blind mode and grace
//! While the broker connection is down ([`Tracker::broker_lost`]) nobody is judged: no
//! deadline fires. After [`Tracker::broker_connected`], and after construction (collector
//! start), every node gets a full timeout counted from that moment before it can be late or
//! offline: its deadlines are computed from `max(last live evidence, anchor)` where the
//! anchor is the last (re)connection or start. Explicit evidence (a Will, a live heartbeat)
//! still acts at once during the grace period. The core hands Wills to the tracker only
//! once its link to the broker is confirmed ([`wills`]), so a broker's Will wave never
//! reaches it.
//!
//! # Restore
//! At start the caller constructs the tracker with `now`, then [`Tracker::restore`]s every
//! node from the store with its stored state. Restored nodes keep that state (no transition
//! is emitted) until evidence or a deadline says otherwise, and the deadlines respect the
//! start grace. Retained births/states then arrive as described above.
//!
//! # Maintenance
//! [`Tracker::set_maintenance`] puts a node under a silence: its reported (effective) state
//! becomes `maintenance` while the tracker keeps judging its own state underneath, and the
//! node leaves `maintenance` for whatever its own state is then.
//!
//! # Cost
//! Deadlines live in a binary heap with at most one live entry per node and lazy deletion
//! (an entry is valid only while it equals the node's `scheduled` time). A heartbeat is a
//! hash lookup and a few stores (no heap operation); a tick pops only entries that are due.
//! The anchor of blind mode is one global value, so reconnecting costs O(1) and each node's
//! entry is pushed back lazily when it pops.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use alarmnet_protocol::{
    Birth, BootId, Heartbeat, Name, NodeId, NodePath, NodeState, OfflineReason, RegionId, SiteId,
    State,
};
use serde::{Deserialize, Serialize};

use crate::model::{Cause, Liveness, NodeInfo, Transition, UnixMillis};

#[cfg(test)]
mod tests;
pub mod wills;

/// Liveness settings: how many heartbeat intervals make a node late and offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// A node is `late` after this many heartbeat intervals without a live message. Raise it
    /// on networks with bursty delivery to avoid late/online chatter.
    pub late_factor: f64,
    /// A node is `offline` after this many heartbeat intervals without a live message (and at
    /// once on its Will). Lower means faster detection, higher means fewer false outages.
    pub offline_factor: f64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            late_factor: 1.5,
            offline_factor: 3.0,
        }
    }
}

impl LivenessConfig {
    /// Every problem with these settings, empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.late_factor.is_finite() && self.late_factor >= 1.0) {
            problems.push(format!(
                "liveness.late_factor must be a number >= 1, got {}",
                self.late_factor
            ));
        }
        if !(self.offline_factor.is_finite() && self.offline_factor > self.late_factor) {
            problems.push(format!(
                "liveness.offline_factor must be a number > late_factor, got {}",
                self.offline_factor
            ));
        }
        problems
    }
}

/// A node as the store remembers it, handed to [`Tracker::restore`] at start.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredNode {
    pub info: NodeInfo,
    /// The stored (effective) state. `maintenance` is restored as an unknown own state under
    /// maintenance; the alert engine's silences then confirm or end the maintenance.
    pub state: Liveness,
    /// When the node entered `state`.
    pub since: UnixMillis,
    pub last_heartbeat: Option<UnixMillis>,
    pub last_seq: Option<u64>,
}

/// The index of a node inside the tracker; stable for the tracker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeIdx(pub(crate) u32);

/// One change of a node's own state, with the effective (reported) states around it. The
/// effective pair differs from the own pair only under maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) idx: NodeIdx,
    pub(crate) own_from: Liveness,
    pub(crate) own_to: Liveness,
    pub(crate) eff_from: Liveness,
    pub(crate) eff_to: Liveness,
    pub(crate) at: UnixMillis,
    pub(crate) cause: Cause,
}

/// What a sequence-bearing message told about the node's sequence counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SeqInfo {
    /// Messages skipped before this one within the current boot.
    pub(crate) missing: u64,
    /// The message started a new boot (a restart).
    pub(crate) restarted: bool,
    /// The missing messages were sent while the collector could not watch: the node's
    /// previous message arrived before the last (re)connection or start (a broker outage
    /// or blind period lies in between), so the gap is explained, not lost telemetry.
    pub(crate) explained: bool,
}

const NO_SEQ: u64 = u64::MAX;
const NO_TIME: UnixMillis = UnixMillis::EPOCH;

/// Per-node state, kept small: ids of sites/regions/kinds are interned.
#[derive(Debug)]
struct Node {
    id: NodeId,
    boot: Option<BootId>,
    name: Option<Box<str>>,
    /// Effective state since.
    since: UnixMillis,
    /// Base of the deadlines: the last live evidence, or the registration time.
    last_live: UnixMillis,
    /// Last live heartbeat (0 = never).
    last_hb: UnixMillis,
    last_seq: u64,
    /// When the last message with a sequence number arrived (0 = never).
    last_seq_at: UnixMillis,
    /// The time of this node's valid heap entry (0 = none).
    scheduled: UnixMillis,
    site: u32,
    interval_ms: u32,
    restarts: u32,
    kind: u16,
    own: Liveness,
    maintenance: bool,
    /// Forgotten ([`Tracker::forget`]): its slot stays so no other index moves.
    gone: bool,
}

impl Node {
    fn effective(&self, own: Liveness) -> Liveness {
        if self.maintenance {
            Liveness::Maintenance
        } else {
            own
        }
    }
}

#[derive(Debug)]
pub(crate) struct SiteEntry {
    pub(crate) id: SiteId,
    pub(crate) region: u32,
    pub(crate) total: u32,
    pub(crate) offline: u32,
    /// The site's nodes (indices into the tracker's nodes), so a site or region is read
    /// without a scan of the whole network.
    members: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct RegionEntry {
    pub(crate) id: RegionId,
    pub(crate) total: u32,
    pub(crate) offline: u32,
    /// The region's sites (indices into the tracker's sites).
    sites: Vec<u32>,
}

/// The liveness tracker. See the module documentation for the rules.
#[derive(Debug)]
pub struct Tracker {
    late_factor: f64,
    offline_factor: f64,
    nodes: Vec<Node>,
    /// foldhash: looked up several times per heartbeat (see the workspace Cargo.toml).
    index: foldhash::HashMap<NodeId, u32>,
    sites: Vec<SiteEntry>,
    site_index: HashMap<(u32, SiteId), u32>,
    regions: Vec<RegionEntry>,
    region_index: HashMap<RegionId, u32>,
    kinds: Vec<Name>,
    kind_index: HashMap<Name, u16>,
    heap: BinaryHeap<Reverse<(UnixMillis, u32)>>,
    blind: bool,
    anchor: UnixMillis,
}

/// Read access to one tracked node.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    tracker: &'a Tracker,
    node: &'a Node,
}

impl<'a> NodeView<'a> {
    pub fn id(&self) -> &'a NodeId {
        &self.node.id
    }

    pub fn region(&self) -> &'a RegionId {
        let site = &self.tracker.sites[self.node.site as usize];
        &self.tracker.regions[site.region as usize].id
    }

    pub fn site(&self) -> &'a SiteId {
        &self.tracker.sites[self.node.site as usize].id
    }

    pub fn kind(&self) -> &'a Name {
        &self.tracker.kinds[usize::from(self.node.kind)]
    }

    pub fn name(&self) -> Option<&'a str> {
        self.node.name.as_deref()
    }

    /// The reported state: `maintenance` while silenced, the node's own state otherwise.
    pub fn state(&self) -> Liveness {
        self.node.effective(self.node.own)
    }

    /// The node's own state, judged underneath maintenance (never `maintenance`).
    pub fn own_state(&self) -> Liveness {
        self.node.own
    }

    pub fn in_maintenance(&self) -> bool {
        self.node.maintenance
    }

    /// When the node entered its reported state.
    pub fn since(&self) -> UnixMillis {
        self.node.since
    }

    /// The current boot (from the last birth or live message).
    pub fn boot(&self) -> Option<&'a BootId> {
        self.node.boot.as_ref()
    }

    /// Restarts (new boots) seen since the node was registered or restored.
    pub fn restarts(&self) -> u32 {
        self.node.restarts
    }

    pub fn hb_interval_ms(&self) -> u64 {
        u64::from(self.node.interval_ms)
    }

    /// The collector time of the last live heartbeat.
    pub fn last_heartbeat(&self) -> Option<UnixMillis> {
        (self.node.last_hb != NO_TIME).then_some(self.node.last_hb)
    }

    /// The highest sequence number seen in the current boot.
    pub fn last_seq(&self) -> Option<u64> {
        (self.node.last_seq != NO_SEQ).then_some(self.node.last_seq)
    }

    pub fn path(&self) -> NodePath {
        NodePath::new(
            self.region().clone(),
            self.site().clone(),
            self.id().clone(),
        )
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            path: self.path(),
            kind: self.kind().clone(),
            name: self.name().map(str::to_owned),
            boot: self.node.boot.clone(),
            hb_interval_ms: self.hb_interval_ms(),
        }
    }
}

fn interval_ms(hb_interval_s: f64) -> u32 {
    // The protocol bounds the interval to 0.5 s ..= 86 400 s, so this fits in u32.
    (hb_interval_s * 1000.0).round().clamp(500.0, 86_400_000.0) as u32
}

impl Tracker {
    /// A tracker started at `now`: the start grace runs from `now`.
    pub fn new(config: &LivenessConfig, now: UnixMillis) -> Self {
        Self {
            late_factor: config.late_factor,
            offline_factor: config.offline_factor,
            nodes: Vec::new(),
            index: foldhash::HashMap::default(),
            sites: Vec::new(),
            site_index: HashMap::new(),
            regions: Vec::new(),
            region_index: HashMap::new(),
            kinds: Vec::new(),
            kind_index: HashMap::new(),
            heap: BinaryHeap::new(),
            blind: false,
            anchor: now,
        }
    }

    /// The number of tracked nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, node: &NodeId) -> bool {
        self.index.contains_key(node.as_str())
    }

    pub fn node(&self, node: &NodeId) -> Option<NodeView<'_>> {
        let idx = *self.index.get(node.as_str())?;
        Some(self.view(NodeIdx(idx)))
    }

    /// A message of the node's current boot whose sequence number is not above the highest
    /// seen: a second delivery (QoS 1 is at least once; an agent resends what the broker
    /// took but did not acknowledge before a disconnect).
    pub fn is_duplicate(&self, node: &NodeId, boot: &BootId, seq: u64) -> bool {
        self.index.get(node.as_str()).is_some_and(|&i| {
            let n = &self.nodes[i as usize];
            n.boot.as_ref() == Some(boot) && n.last_seq != NO_SEQ && seq <= n.last_seq
        })
    }

    /// Every tracked node, in registration order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView<'_>> {
        self.nodes
            .iter()
            .filter(|node| !node.gone)
            .map(|node| NodeView {
                tracker: self,
                node,
            })
    }

    /// Whether the collector is blind (broker connection down).
    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// The start of the current grace period (collector start or last reconnect).
    pub fn grace_anchor(&self) -> UnixMillis {
        self.anchor
    }

    /// The nodes of a region, or of one of its sites, in no particular order: read from
    /// the tracker's index, not by a scan of every node.
    pub fn members<'a>(
        &'a self,
        region: &RegionId,
        site: Option<&SiteId>,
    ) -> impl Iterator<Item = NodeView<'a>> + 'a {
        let sites: &[u32] = match (self.region_index.get(region), site) {
            (None, _) => &[],
            (Some(&r), None) => &self.regions[r as usize].sites,
            (Some(&r), Some(site)) => self
                .site_index
                .get(&(r, site.clone()))
                .map_or(&[], std::slice::from_ref),
        };
        sites
            .iter()
            .flat_map(move |&s| self.sites[s as usize].members.iter())
            .map(move |&i| NodeView {
                tracker: self,
                node: &self.nodes[i as usize],
            })
    }

    /// `(offline, total)` node counts of a site.
    pub fn site_counts(&self, region: &RegionId, site: &SiteId) -> Option<(u32, u32)> {
        let r = *self.region_index.get(region)?;
        let s = *self.site_index.get(&(r, site.clone()))?;
        let e = &self.sites[s as usize];
        Some((e.offline, e.total))
    }

    /// `(offline, total)` node counts of a region.
    pub fn region_counts(&self, region: &RegionId) -> Option<(u32, u32)> {
        let r = *self.region_index.get(region)?;
        let e = &self.regions[r as usize];
        Some((e.offline, e.total))
    }

    /// The earliest time at which [`Tracker::tick`] may have work; `None` while blind or
    /// when no deadline is pending. May be early (a stale entry), never late.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        if self.blind {
            return None;
        }
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    // ----- public entry points returning transitions -----

    /// A birth: registers or updates the node. A live birth (`retained == false`) proves
    /// the node connected now; a retained one only describes it.
    pub fn on_birth(
        &mut self,
        path: &NodePath,
        birth: &Birth,
        retained: bool,
        now: UnixMillis,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        self.birth(path, birth, retained, now, &mut out);
        self.transitions(&out)
    }

    /// A state message (the agent's own, or its Will published by the broker).
    pub fn on_state(
        &mut self,
        path: &NodePath,
        state: &State,
        retained: bool,
        now: UnixMillis,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        self.state(&path.node, state, retained, now, &mut out);
        self.transitions(&out)
    }

    /// A heartbeat. Heartbeats of unregistered nodes (no birth yet) are ignored: check
    /// [`Tracker::contains`] and ask the agent for a `rebirth`.
    pub fn on_heartbeat(
        &mut self,
        path: &NodePath,
        hb: &Heartbeat,
        now: UnixMillis,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        self.heartbeat(&path.node, hb, now, &mut out);
        self.transitions(&out)
    }

    /// A live (not replayed) fault or test receipt: proves life like a heartbeat.
    pub fn on_live_message(
        &mut self,
        node: &NodeId,
        boot: &BootId,
        seq: u64,
        now: UnixMillis,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        self.sequenced(node, boot, seq, false, now, &mut out);
        self.transitions(&out)
    }

    /// A replayed fault or test receipt: only advances the current boot's sequence.
    pub fn on_replayed_message(&mut self, node: &NodeId, boot: &BootId, seq: u64) {
        let mut out = Vec::new();
        self.sequenced(node, boot, seq, true, UnixMillis::EPOCH, &mut out);
    }

    /// The broker connection was lost: deadlines due until `now` are judged, then nobody
    /// is judged until [`Tracker::broker_connected`].
    pub fn broker_lost(&mut self, now: UnixMillis) -> Vec<Transition> {
        let mut out = Vec::new();
        self.lost(now, &mut out);
        self.transitions(&out)
    }

    /// The broker connection is back: every node gets a full timeout from `now`.
    pub fn broker_connected(&mut self, now: UnixMillis) {
        self.blind = false;
        self.anchor = self.anchor.max(now);
    }

    /// Judges every deadline due at `now`.
    pub fn tick(&mut self, now: UnixMillis) -> Vec<Transition> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        self.transitions(&out)
    }

    /// The nodes [`Tracker::tick`] at `now` would judge (late or offline), without judging
    /// them: for a caller that must check something about them first. Costs what the tick
    /// costs (the due heap entries, popped and put back).
    pub fn due(&mut self, now: UnixMillis) -> Vec<NodeId> {
        let mut due = Vec::new();
        if self.blind {
            return due;
        }
        let mut popped = Vec::new();
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > now {
                break;
            }
            popped.push(self.heap.pop().expect("peeked"));
            let idx = NodeIdx(i);
            if self.nodes[i as usize].scheduled == t
                && self.deadline(idx).is_some_and(|(at, _)| at <= now)
            {
                due.push(self.nodes[i as usize].id.clone());
            }
        }
        self.heap.extend(popped);
        due
    }

    /// Forgets a node (it moved to a region another collector serves): it is judged no
    /// more, counts in no site or region, and is no longer found by its id; a birth
    /// registers it anew. No transition: the node's state is its new collector's to tell.
    /// Returns whether it was tracked.
    pub fn forget(&mut self, node: &NodeId) -> bool {
        let Some(i) = self.index.remove(node.as_str()) else {
            return false;
        };
        let n = &mut self.nodes[i as usize];
        n.gone = true;
        // Its heap entries are stale from now on.
        n.scheduled = NO_TIME;
        let (site, offline) = (n.site, u32::from(n.own == Liveness::Offline));
        self.move_counts(site, -1, offline);
        let members = &mut self.sites[site as usize].members;
        if let Some(k) = members.iter().position(|&m| m == i) {
            members.swap_remove(k);
        }
        true
    }

    /// Puts a node under maintenance (a silence covers it) or takes it out.
    pub fn set_maintenance(&mut self, node: &NodeId, on: bool, now: UnixMillis) -> Vec<Transition> {
        let mut out = Vec::new();
        if let Some(&idx) = self.index.get(node.as_str()) {
            self.maintenance(NodeIdx(idx), on, now, &mut out);
        }
        self.transitions(&out)
    }

    /// Restores a node from the store at start, without emitting a transition. Restoring a
    /// node that is already tracked replaces its description and state.
    pub fn restore(&mut self, node: RestoredNode) {
        let RestoredNode {
            info,
            state,
            since,
            last_heartbeat,
            last_seq,
        } = node;
        let idx = self.register(&info.path, &info.kind, since);
        let (own, maintenance) = match state {
            Liveness::Maintenance => (Liveness::Unknown, true),
            other => (other, false),
        };
        let mut scratch = Vec::new();
        self.set_own(idx, own, since, Cause::Restored, &mut scratch);
        let n = &mut self.nodes[idx.0 as usize];
        n.name = info.name.map(String::into_boxed_str);
        n.boot = info.boot;
        n.interval_ms =
            u32::try_from(info.hb_interval_ms.clamp(500, 86_400_000)).unwrap_or(86_400_000);
        n.maintenance = maintenance;
        n.since = since;
        n.last_hb = last_heartbeat.unwrap_or(NO_TIME);
        n.last_live = last_heartbeat.unwrap_or(since);
        n.last_seq = last_seq.unwrap_or(NO_SEQ);
        self.schedule(idx);
    }

    // ----- crate-internal entry points reporting full changes -----

    pub(crate) fn idx(&self, node: &NodeId) -> Option<NodeIdx> {
        self.index.get(node.as_str()).map(|&i| NodeIdx(i))
    }

    pub(crate) fn view(&self, idx: NodeIdx) -> NodeView<'_> {
        NodeView {
            tracker: self,
            node: &self.nodes[idx.0 as usize],
        }
    }

    pub(crate) fn site_of(&self, idx: NodeIdx) -> (u32, u32) {
        let s = self.nodes[idx.0 as usize].site;
        (s, self.sites[s as usize].region)
    }

    pub(crate) fn site_entry(&self, site: u32) -> &SiteEntry {
        &self.sites[site as usize]
    }

    pub(crate) fn region_entry(&self, region: u32) -> &RegionEntry {
        &self.regions[region as usize]
    }

    pub(crate) fn site_by_id(&self, region: &RegionId, site: &SiteId) -> Option<u32> {
        let r = *self.region_index.get(region)?;
        self.site_index.get(&(r, site.clone())).copied()
    }

    pub(crate) fn region_by_id(&self, region: &RegionId) -> Option<u32> {
        self.region_index.get(region).copied()
    }

    pub(crate) fn site_count(&self) -> usize {
        self.sites.len()
    }

    pub(crate) fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// The time until which a node's judgement is suspended by the current grace period.
    pub(crate) fn grace_end(&self, idx: NodeIdx) -> UnixMillis {
        let n = &self.nodes[idx.0 as usize];
        self.anchor + self.offline_after(n)
    }

    pub(crate) fn transitions(&self, changes: &[Change]) -> Vec<Transition> {
        changes
            .iter()
            .filter(|c| c.eff_from != c.eff_to)
            .map(|c| Transition {
                node: self.nodes[c.idx.0 as usize].id.clone(),
                from: c.eff_from,
                to: c.eff_to,
                at: c.at,
                cause: c.cause,
            })
            .collect()
    }

    pub(crate) fn birth(
        &mut self,
        path: &NodePath,
        birth: &Birth,
        retained: bool,
        now: UnixMillis,
        out: &mut Vec<Change>,
    ) -> NodeIdx {
        let idx = self.register(path, &birth.kind, now);
        let interval = interval_ms(birth.hb_interval_s);
        let n = &mut self.nodes[idx.0 as usize];
        let name = birth.name.as_ref().map(|t| t.as_str());
        if n.name.as_deref() != name {
            n.name = name.map(Box::from);
        }
        let interval_changed = n.interval_ms != interval;
        n.interval_ms = interval;
        if n.boot.as_ref() != Some(&birth.boot) {
            if n.boot.is_some() {
                n.restarts = n.restarts.saturating_add(1);
            }
            n.boot = Some(birth.boot.clone());
            n.last_seq = NO_SEQ;
        }
        if !retained {
            self.live(idx, now, Cause::Birth, out);
        }
        if interval_changed || retained {
            self.schedule(idx);
        }
        idx
    }

    pub(crate) fn state(
        &mut self,
        node: &NodeId,
        state: &State,
        retained: bool,
        now: UnixMillis,
        out: &mut Vec<Change>,
    ) -> Option<NodeIdx> {
        let idx = self.idx(node)?;
        let n = &mut self.nodes[idx.0 as usize];
        let current = n.boot.as_ref().is_none_or(|b| *b == state.boot);
        match state.state {
            NodeState::Online => {
                if retained {
                    return Some(idx);
                }
                if !current {
                    n.restarts = n.restarts.saturating_add(1);
                    n.boot = Some(state.boot.clone());
                    n.last_seq = NO_SEQ;
                }
                self.live(idx, now, Cause::Heartbeat, out);
            }
            NodeState::Offline => {
                if !current {
                    // A stale Will from an older connection: the node has restarted since.
                    return Some(idx);
                }
                if n.boot.is_none() {
                    n.boot = Some(state.boot.clone());
                }
                match state.reason {
                    Some(OfflineReason::Shutdown) => {
                        self.set_own(idx, Liveness::Stopped, now, Cause::Shutdown, out);
                    }
                    Some(OfflineReason::Lost) | None => {
                        // A clean stop stays a clean stop even if a Will follows it.
                        if self.nodes[idx.0 as usize].own != Liveness::Stopped {
                            self.set_own(idx, Liveness::Offline, now, Cause::Will, out);
                        }
                    }
                }
            }
        }
        Some(idx)
    }

    pub(crate) fn heartbeat(
        &mut self,
        node: &NodeId,
        hb: &Heartbeat,
        now: UnixMillis,
        out: &mut Vec<Change>,
    ) -> Option<(NodeIdx, SeqInfo)> {
        let (idx, seq) = self.sequenced(node, &hb.boot, hb.seq, hb.replay, now, out)?;
        if !hb.replay {
            self.nodes[idx.0 as usize].last_hb = now;
        }
        Some((idx, seq))
    }

    /// Any message with a boot and a sequence number (heartbeat, fault, test receipt).
    pub(crate) fn sequenced(
        &mut self,
        node: &NodeId,
        boot: &BootId,
        seq: u64,
        replay: bool,
        now: UnixMillis,
        out: &mut Vec<Change>,
    ) -> Option<(NodeIdx, SeqInfo)> {
        let idx = self.idx(node)?;
        let n = &mut self.nodes[idx.0 as usize];
        let mut info = SeqInfo::default();
        if n.boot.as_ref() == Some(boot) {
            if n.last_seq == NO_SEQ || seq > n.last_seq {
                if n.last_seq != NO_SEQ {
                    info.missing = seq - n.last_seq - 1;
                    info.explained = info.missing > 0 && n.last_seq_at < self.anchor;
                }
                n.last_seq = seq;
            }
            n.last_seq_at = n.last_seq_at.max(now);
        } else if replay {
            // Spooled data of another boot: history only, says nothing about this boot.
            return Some((idx, info));
        } else {
            if n.boot.is_some() {
                n.restarts = n.restarts.saturating_add(1);
                info.restarted = true;
            }
            n.boot = Some(boot.clone());
            n.last_seq = seq;
        }
        if !replay {
            self.live(idx, now, Cause::Heartbeat, out);
        }
        Some((idx, info))
    }

    pub(crate) fn lost(&mut self, now: UnixMillis, out: &mut Vec<Change>) {
        self.tick_into(now, out);
        self.blind = true;
    }

    pub(crate) fn tick_into(&mut self, now: UnixMillis, out: &mut Vec<Change>) {
        if self.blind {
            return;
        }
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            let idx = NodeIdx(i);
            if self.nodes[i as usize].scheduled != t {
                continue; // superseded entry
            }
            self.nodes[i as usize].scheduled = NO_TIME;
            match self.deadline(idx) {
                Some((due, to)) if due <= now => {
                    self.set_own(idx, to, due, Cause::Timeout, out);
                    // set_own scheduled the next deadline (pushed if already due).
                    if self.nodes[i as usize].scheduled == NO_TIME {
                        self.schedule(idx);
                    }
                }
                Some(_) => self.schedule(idx),
                None => {}
            }
        }
    }

    pub(crate) fn maintenance(
        &mut self,
        idx: NodeIdx,
        on: bool,
        now: UnixMillis,
        out: &mut Vec<Change>,
    ) {
        let n = &mut self.nodes[idx.0 as usize];
        if n.maintenance == on {
            return;
        }
        let eff_from = n.effective(n.own);
        n.maintenance = on;
        let eff_to = n.effective(n.own);
        n.since = now;
        out.push(Change {
            idx,
            own_from: n.own,
            own_to: n.own,
            eff_from,
            eff_to,
            at: now,
            cause: if on {
                Cause::MaintenanceStart
            } else {
                Cause::MaintenanceEnd
            },
        });
    }

    // ----- internals -----

    fn late_after(&self, n: &Node) -> Duration {
        Duration::from_millis((f64::from(n.interval_ms) * self.late_factor).round() as u64)
    }

    fn offline_after(&self, n: &Node) -> Duration {
        Duration::from_millis((f64::from(n.interval_ms) * self.offline_factor).round() as u64)
    }

    /// The node's next judgement: when, and to which state.
    fn deadline(&self, idx: NodeIdx) -> Option<(UnixMillis, Liveness)> {
        let n = &self.nodes[idx.0 as usize];
        let base = n.last_live.max(self.anchor);
        match n.own {
            Liveness::Online => Some((base + self.late_after(n), Liveness::Late)),
            Liveness::Late | Liveness::Unknown => {
                Some((base + self.offline_after(n), Liveness::Offline))
            }
            Liveness::Offline | Liveness::Stopped | Liveness::Maintenance => None,
        }
    }

    /// Makes sure the node has a heap entry no later than its next deadline.
    fn schedule(&mut self, idx: NodeIdx) {
        let Some((due, _)) = self.deadline(idx) else {
            return;
        };
        let n = &mut self.nodes[idx.0 as usize];
        // Keep at most one valid entry; an early entry is fine (it re-schedules on pop).
        let due = due.max(UnixMillis::from_millis(1));
        if n.scheduled == NO_TIME || due < n.scheduled {
            n.scheduled = due;
            self.heap.push(Reverse((due, idx.0)));
        }
    }

    fn live(&mut self, idx: NodeIdx, now: UnixMillis, cause: Cause, out: &mut Vec<Change>) {
        let n = &mut self.nodes[idx.0 as usize];
        n.last_live = n.last_live.max(now);
        if n.own != Liveness::Online {
            self.set_own(idx, Liveness::Online, now, cause, out);
        }
    }

    fn set_own(
        &mut self,
        idx: NodeIdx,
        to: Liveness,
        at: UnixMillis,
        cause: Cause,
        out: &mut Vec<Change>,
    ) {
        let n = &mut self.nodes[idx.0 as usize];
        let from = n.own;
        if from == to {
            return;
        }
        n.own = to;
        let eff_from = n.effective(from);
        let eff_to = n.effective(to);
        if eff_from != eff_to {
            n.since = at;
        }
        let site = n.site as usize;
        if from == Liveness::Offline {
            self.sites[site].offline -= 1;
            let r = self.sites[site].region as usize;
            self.regions[r].offline -= 1;
        }
        if to == Liveness::Offline {
            self.sites[site].offline += 1;
            let r = self.sites[site].region as usize;
            self.regions[r].offline += 1;
        }
        out.push(Change {
            idx,
            own_from: from,
            own_to: to,
            eff_from,
            eff_to,
            at,
            cause,
        });
        self.schedule(idx);
    }

    fn intern_site(&mut self, region: &RegionId, site: &SiteId) -> u32 {
        let r = match self.region_index.get(region) {
            Some(&r) => r,
            None => {
                let r = self.regions.len() as u32;
                self.regions.push(RegionEntry {
                    id: region.clone(),
                    total: 0,
                    offline: 0,
                    sites: Vec::new(),
                });
                self.region_index.insert(region.clone(), r);
                r
            }
        };
        if let Some(&s) = self.site_index.get(&(r, site.clone())) {
            return s;
        }
        let s = self.sites.len() as u32;
        self.sites.push(SiteEntry {
            id: site.clone(),
            region: r,
            total: 0,
            offline: 0,
            members: Vec::new(),
        });
        self.regions[r as usize].sites.push(s);
        self.site_index.insert((r, site.clone()), s);
        s
    }

    fn intern_kind(&mut self, kind: &Name) -> u16 {
        if let Some(&k) = self.kind_index.get(kind) {
            return k;
        }
        // Kinds are a handful of words; past u16::MAX distinct kinds they share the last.
        let k = u16::try_from(self.kinds.len()).unwrap_or(u16::MAX);
        if usize::from(k) == self.kinds.len() {
            self.kinds.push(kind.clone());
            self.kind_index.insert(kind.clone(), k);
        }
        k
    }

    /// Finds or creates the node, moving it to `path`'s site if it changed.
    fn register(&mut self, path: &NodePath, kind: &Name, now: UnixMillis) -> NodeIdx {
        let site = self.intern_site(&path.region, &path.site);
        let kind = self.intern_kind(kind);
        if let Some(&i) = self.index.get(path.node.as_str()) {
            let n = &mut self.nodes[i as usize];
            n.kind = kind;
            let old = n.site;
            if old != site {
                let offline = u32::from(n.own == Liveness::Offline);
                n.site = site;
                self.move_counts(old, -1, offline);
                self.move_counts(site, 1, offline);
                let members = &mut self.sites[old as usize].members;
                if let Some(k) = members.iter().position(|&m| m == i) {
                    members.swap_remove(k);
                }
                self.sites[site as usize].members.push(i);
            }
            return NodeIdx(i);
        }
        let i = u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes");
        self.nodes.push(Node {
            id: path.node.clone(),
            boot: None,
            name: None,
            since: now,
            last_live: now,
            last_hb: NO_TIME,
            last_seq: NO_SEQ,
            last_seq_at: NO_TIME,
            scheduled: NO_TIME,
            site,
            interval_ms: 10_000,
            restarts: 0,
            kind,
            own: Liveness::Unknown,
            maintenance: false,
            gone: false,
        });
        self.index.insert(path.node.clone(), i);
        self.move_counts(site, 1, 0);
        self.sites[site as usize].members.push(i);
        // The caller schedules: a live birth makes the node online right after this.
        NodeIdx(i)
    }

    fn move_counts(&mut self, site: u32, sign: i32, offline: u32) {
        let s = &mut self.sites[site as usize];
        let r = s.region as usize;
        if sign > 0 {
            s.total += 1;
            s.offline += offline;
            self.regions[r].total += 1;
            self.regions[r].offline += offline;
        } else {
            s.total -= 1;
            s.offline -= offline;
            self.regions[r].total -= 1;
            self.regions[r].offline -= offline;
        }
    }
}
