//! Attribution: each device's measured interval (GPU time and energy between two samples)
//! is shared among the requests in flight on that device during it, weighted by the work
//! each did in it; an interval with no work in flight is idle cost. Attributed + idle =
//! measured, exactly (up to float rounding), over any window.
//!
//! Work of a request in an interval `[a, b)`: `prefill_weight` × its computed prompt tokens
//! (input − cached) × the share of its prefill phase inside `[a, b)`, plus `decode_weight` ×
//! its output tokens × the share of its decode phase inside `[a, b)`. For a stream the
//! prefill phase runs from the request's first byte to its first token and the decode phase
//! from the first token to the last byte; otherwise both span the whole request.
//!
//! Which requests share a device: the device's compute processes (NVML) and the request's
//! process belong to one serving group: the same container when known, else the same
//! process tree (a vLLM API server, its engine core and its tensor-parallel workers). A
//! device whose processes are unknown is shared by every request in flight.
//!
//! Settling waits for knowledge: a request's numbers are known only at its end, so an
//! interval is settled once no request that could overlap it is still in flight (the
//! tracker's oldest in-flight start is past the interval), and a record leaves once every
//! device's settled time line has passed its end. `max_hold_s` bounds the wait: older
//! intervals and records are settled with what is known (counted as forced).
//!
//! Bounded: what the ledger knows of a process (its parent, its container) is forgotten
//! `max_hold_s` after it exited, once every interval and record that could name it is
//! settled; its children keep their serving group (they are linked to its parent and
//! inherit its container). Records waiting are bounded by [`MAX_PENDING`].

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use super::CostConfig;
use crate::{
    gpu::{DeviceInterval, DeviceSample, Intervals},
    num::u64_to_f64,
    record::RequestRecord,
};

/// Totals over the session: the invariant's three terms and what it took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct CostTotals {
    /// Cost of every settled device interval, from the samples and the price list.
    pub measured_usd: f64,
    /// Of it, shared among requests.
    pub attributed_usd: f64,
    /// Of it, intervals with no request doing work on the device.
    pub idle_usd: f64,
    pub measured_gpu_s: f64,
    pub idle_gpu_s: f64,
    pub measured_energy_j: f64,
    pub idle_energy_j: f64,
    /// Device intervals settled, and those of them that were idle.
    pub intervals: u64,
    pub idle_intervals: u64,
    /// Intervals and records settled by `max_hold_s` rather than by knowledge.
    pub intervals_forced: u64,
    pub records_forced: u64,
    /// Records that left with a cost.
    pub records_costed: u64,
}

/// A record waiting for its cost.
#[derive(Debug)]
struct Pending {
    record: RequestRecord,
    arrived_ns: u64,
    gpu_s: f64,
    energy_j: f64,
    cost_usd: f64,
}

/// The cost stage's state. Synchronous and free of I/O.
#[derive(Debug)]
pub struct Ledger {
    config: CostConfig,
    /// A GPU source is configured: records wait for its samples.
    expects_gpu: bool,
    intervals: Intervals,
    open: VecDeque<DeviceInterval>,
    /// In arrival order.
    pending: VecDeque<Pending>,
    /// Process tree facts: child → parent (both traced or seen on a GPU).
    parents: HashMap<u32, u32>,
    /// Container of a process, when it runs in one: a container is one serving group.
    containers: HashMap<u32, String>,
    /// Per device: the end of its last settled interval.
    settled_until: HashMap<u32, u64>,
    /// Processes that exited, with when: forgotten `max_hold_s` later.
    exited: HashMap<u32, u64>,
    /// The same, in exit order.
    exit_order: VecDeque<(u64, u32)>,
    totals: CostTotals,
}

impl Ledger {
    pub fn new(config: CostConfig, expects_gpu: bool) -> Self {
        Self {
            config,
            expects_gpu,
            intervals: Intervals::default(),
            open: VecDeque::new(),
            pending: VecDeque::new(),
            parents: HashMap::new(),
            containers: HashMap::new(),
            settled_until: HashMap::new(),
            exited: HashMap::new(),
            exit_order: VecDeque::new(),
            totals: CostTotals::default(),
        }
    }

    /// Whether records wait for GPU samples.
    pub fn expects_gpu(&self) -> bool {
        self.expects_gpu
    }

    pub fn totals(&self) -> CostTotals {
        self.totals
    }

    /// Samples that were out of order, intervals whose energy came from power readings.
    pub fn sample_counters(&self) -> (u64, u64) {
        (
            self.intervals.out_of_order,
            self.intervals.energy_from_power,
        )
    }

    /// Records waiting for their cost.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// `pid`'s parent is `ppid` (a fork, or a process found already running).
    pub fn process(&mut self, pid: u32, ppid: u32) {
        if pid != ppid {
            // A process again under a pid that exited: not to be forgotten with the old one.
            self.exited.remove(&pid);
            self.parents.insert(pid, ppid);
        }
    }

    /// `pid` runs in container `id`.
    pub fn container(&mut self, pid: u32, id: String) {
        self.exited.remove(&pid);
        self.containers.insert(pid, id);
    }

    /// `pid` exited at kernel time `ts_ns`: what is known of it is forgotten once nothing
    /// still waiting can name it ([`Ledger::settle`], `max_hold_s` later).
    pub fn process_exited(&mut self, pid: u32, ts_ns: u64) {
        if self.parents.contains_key(&pid) || self.containers.contains_key(&pid) {
            self.exited.insert(pid, ts_ns);
            self.exit_order.push_back((ts_ns, pid));
        }
    }

    /// Processes the ledger knows of (parent or container): bounded by the processes alive
    /// and those that exited less than `max_hold_s` ago.
    pub fn processes_known(&self) -> usize {
        self.parents.len().max(self.containers.len())
    }

    /// Forgets the processes that exited before `before_ns`.
    fn forget_exited(&mut self, before_ns: u64) {
        while let Some(&(ts, pid)) = self.exit_order.front() {
            if ts > before_ns {
                break;
            }
            self.exit_order.pop_front();
            if self.exited.get(&pid) == Some(&ts) {
                self.exited.remove(&pid);
                self.forget(pid);
            }
        }
    }

    /// Forgets one process; its children keep their serving group: linked to its parent
    /// instead (a root stays their root: nothing is kept for it but their links), and given
    /// its container when they have none of their own. O(processes known).
    fn forget(&mut self, pid: u32) {
        let parent = self.parents.remove(&pid);
        let container = self.containers.remove(&pid);
        let children: Vec<u32> = self
            .parents
            .iter()
            .filter(|&(_, &p)| p == pid)
            .map(|(&c, _)| c)
            .collect();
        for child in children {
            if let Some(parent) = parent {
                self.parents.insert(child, parent);
            }
            if let Some(id) = &container {
                self.containers.entry(child).or_insert_with(|| id.clone());
            }
        }
    }

    /// The serving group of a process: its container when known, else the root of its
    /// process tree.
    fn group(&self, mut pid: u32) -> Group<'_> {
        for _ in 0..64 {
            if let Some(id) = self.containers.get(&pid) {
                return Group::Container(id);
            }
            match self.parents.get(&pid) {
                Some(&p) => pid = p,
                None => break,
            }
        }
        Group::Tree(pid)
    }

    /// One device sample.
    pub fn sample(&mut self, sample: DeviceSample) {
        if let Some(interval) = self.intervals.push(sample) {
            self.open.push_back(interval);
        }
    }

    /// A finished record: out at once when no GPU is configured (with its chargeback
    /// price), else kept until its cost is settled.
    pub fn admit(&mut self, mut record: RequestRecord, now_ns: u64, out: &mut Vec<RequestRecord>) {
        record.chargeback_usd = self.config.chargeback_usd(
            record.input_tokens,
            record.cached_input_tokens,
            record.output_tokens,
        );
        if !self.expects_gpu {
            out.push(record);
            return;
        }
        // Bounded: past the bound the oldest waiting record leaves with what it has
        // accrued (counted as forced); its later shares go to the others or to idle.
        if self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.leave(oldest, false, out);
            }
        }
        self.pending.push_back(Pending {
            record,
            arrived_ns: now_ns,
            gpu_s: 0.0,
            energy_j: 0.0,
            cost_usd: 0.0,
        });
    }

    /// Settles what can be settled. `known_before_ns`: every request that started before
    /// it has reached the ledger or is still in flight — the first byte of the oldest
    /// request in flight, or how far the capture has been read if that is earlier (a request
    /// whose bytes still wait in the ring buffer is neither), `u64::MAX` when all is known.
    pub fn settle(&mut self, known_before_ns: u64, now_ns: u64, out: &mut Vec<RequestRecord>) {
        let floor = known_before_ns;
        let hold_ns = duration_ns(self.config.max_hold_s);
        let force_before = now_ns.saturating_sub(hold_ns);
        let mut i = 0;
        while i < self.open.len() {
            let t1 = self.open[i].t1_ns;
            if t1 <= floor || t1 <= force_before {
                if t1 > floor {
                    self.totals.intervals_forced += 1;
                }
                if let Some(interval) = self.open.remove(i) {
                    self.settle_interval(&interval);
                }
            } else {
                i += 1;
            }
        }
        // A GPU source that never produced a sample (NVML failing every call) must not hold
        // records for max_hold_s: past a grace period they leave without a cost.
        let no_gpu = self.intervals.devices() == 0;
        let grace_before = now_ns.saturating_sub(NO_SAMPLE_GRACE_NS);
        self.emit(
            |p, settled| {
                settled || p.arrived_ns <= force_before || (no_gpu && p.arrived_ns <= grace_before)
            },
            out,
        );
        // Every interval and record from before `force_before` has left: none names a
        // process that exited before it.
        self.forget_exited(force_before);
    }

    /// End of session: everything is settled with what is known.
    pub fn finish(&mut self, out: &mut Vec<RequestRecord>) {
        while let Some(interval) = self.open.pop_front() {
            self.settle_interval(&interval);
        }
        self.emit(|_, _| true, out);
    }

    fn emit(&mut self, ready: impl Fn(&Pending, bool) -> bool, out: &mut Vec<RequestRecord>) {
        let devices = self.intervals.devices();
        let settled_floor = (self.settled_until.len() == devices && devices > 0)
            .then(|| self.settled_until.values().copied().min())
            .flatten();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for p in std::mem::take(&mut self.pending) {
            let end = p.record.end_ns.unwrap_or(p.record.start_ns);
            let settled = settled_floor.is_some_and(|s| s >= end);
            if ready(&p, settled) {
                self.leave(p, settled, out);
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
    }

    /// A record leaves the ledger with its accrued cost (none when no GPU was ever seen).
    fn leave(&mut self, p: Pending, settled: bool, out: &mut Vec<RequestRecord>) {
        if !settled {
            self.totals.records_forced += 1;
        }
        let mut record = p.record;
        if self.intervals.devices() > 0 {
            self.totals.records_costed += 1;
            record.gpu_seconds = Some(p.gpu_s);
            record.gpu_energy_j = Some(p.energy_j);
            record.cost_usd = Some(p.cost_usd);
        }
        out.push(record);
    }

    fn settle_interval(&mut self, iv: &DeviceInterval) {
        let seconds = iv.seconds();
        let cost = self.config.interval_cost(&iv.name, seconds, iv.energy_j);
        let t = &mut self.totals;
        t.intervals += 1;
        t.measured_usd += cost;
        t.measured_gpu_s += seconds;
        t.measured_energy_j += iv.energy_j;
        let groups: HashSet<Group<'_>> = iv.pids.iter().map(|&p| self.group(p)).collect();
        let works: Vec<(usize, f64)> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| iv.pids.is_empty() || groups.contains(&self.group(p.record.pid)))
            .map(|(i, p)| (i, work(&self.config, &p.record, iv.t0_ns, iv.t1_ns)))
            .filter(|(_, w)| *w > 0.0)
            .collect();
        let total: f64 = works.iter().map(|(_, w)| w).sum();
        let t = &mut self.totals;
        if total > 0.0 {
            for (i, w) in works {
                let share = w / total;
                let p = &mut self.pending[i];
                p.gpu_s += seconds * share;
                p.energy_j += iv.energy_j * share;
                p.cost_usd += cost * share;
                t.attributed_usd += cost * share;
            }
        } else {
            t.idle_intervals += 1;
            t.idle_usd += cost;
            t.idle_gpu_s += seconds;
            t.idle_energy_j += iv.energy_j;
        }
        let until = self.settled_until.entry(iv.index).or_insert(0);
        *until = (*until).max(iv.t1_ns);
    }
}

/// Records waiting for their cost at most.
const MAX_PENDING: usize = 65_536;

/// How long records wait for a first GPU sample before leaving without a cost.
const NO_SAMPLE_GRACE_NS: u64 = 5_000_000_000;

/// A serving group: the processes whose GPU work a request may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group<'a> {
    Container(&'a str),
    Tree(u32),
}

fn duration_ns(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        std::time::Duration::try_from_secs_f64(seconds).map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        })
    } else {
        0
    }
}

/// The share of phase `[p0, p1)` inside `[a, b)` (an instant phase counts whole in the
/// interval that holds it).
fn fraction(p0: u64, p1: u64, a: u64, b: u64) -> f64 {
    if p1 <= p0 {
        return if p0 >= a && p0 < b { 1.0 } else { 0.0 };
    }
    let overlap = p1.min(b).saturating_sub(p0.max(a));
    u64_to_f64(overlap) / u64_to_f64(p1 - p0)
}

/// The work `record` did in `[a, b)`.
pub fn work(config: &CostConfig, record: &RequestRecord, a: u64, b: u64) -> f64 {
    let start = record.start_ns;
    let end = record.end_ns.unwrap_or(start).max(start);
    let prompt = record
        .input_tokens
        .unwrap_or(0)
        .saturating_sub(record.cached_input_tokens.unwrap_or(0));
    let output = record.output_tokens.unwrap_or(0);
    let first = record
        .first_token_ns
        .filter(|&t| record.stream && t >= start && t <= end);
    let (prefill, decode) = match first {
        Some(f) => ((start, f), (f, end)),
        None => ((start, end), (start, end)),
    };
    config.prefill_weight * u64_to_f64(prompt) * fraction(prefill.0, prefill.1, a, b)
        + config.decode_weight * u64_to_f64(output) * fraction(decode.0, decode.1, a, b)
}

#[cfg(test)]
mod tests;
