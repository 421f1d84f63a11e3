//! What to trace ([`TargetSelector`], also the `targets` section of `strike run`'s
//! configuration) and the live target set ([`Targets`]), which turns what it reads from
//! `/proc` into events for the processor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    incident::{Incident as _, Incidents, TargetNotAdded},
    processor::ProcessChange,
    scanner::Reconciliation,
};
use crate::{
    capture::{
        procfs::{container_id, pod_uid, Proc, TCP_LISTEN},
        Capture, CaptureError,
    },
    clock::monotonic_ns,
    conn::{ConnKey, Role},
    event::{CaptureEvent, ProcessFact, SocketClose, SocketOpen},
    gpu::DeviceSample,
    telemetry::PipelineStats,
};

/// Which processes to trace: a process is traced when any selector matches it. Also the
/// `targets` section of `strike run`'s configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetSelector {
    /// Process ids.
    pub pids: Vec<u32>,
    /// Processes listening on these TCP ports.
    pub ports: Vec<u16>,
    /// Process names, as in `/proc/PID/comm`.
    pub comms: Vec<String>,
    /// Substrings of a cgroup path (any hierarchy), e.g. a pod UID or `kubepods`.
    pub cgroups: Vec<String>,
    /// Container ids, or prefixes of at least 12 hex digits.
    pub containers: Vec<String>,
    /// Also trace the selected processes' descendants (workers).
    pub follow_children: bool,
}

impl Default for TargetSelector {
    fn default() -> Self {
        Self {
            pids: Vec::new(),
            ports: Vec::new(),
            comms: Vec::new(),
            cgroups: Vec::new(),
            containers: Vec::new(),
            follow_children: true,
        }
    }
}

impl TargetSelector {
    /// The processes matching now (with descendants when following children).
    pub fn resolve(&self, proc: &Proc) -> BTreeSet<u32> {
        let mut pids: BTreeSet<u32> = self
            .pids
            .iter()
            .copied()
            .filter(|&p| proc.exists(p))
            .collect();
        for &port in &self.ports {
            pids.extend(proc.pids_listening_on(port));
        }
        for comm in &self.comms {
            pids.extend(proc.pids_by_comm(comm));
        }
        for cgroup in &self.cgroups {
            pids.extend(proc.pids_by_cgroup(cgroup));
        }
        for container in &self.containers {
            pids.extend(proc.pids_by_container(&container.to_ascii_lowercase()));
        }
        let mut pids = if self.follow_children {
            proc.with_descendants(&pids)
        } else {
            pids
        };
        // A zombie still shows in /proc with its cgroup and comm; taking it again after its
        // exit event would keep it a target forever.
        pids.retain(|&p| proc.is_live(p));
        pids
    }

    /// Whether the selection can gain processes while running (by port, name, cgroup or
    /// container).
    pub fn is_dynamic(&self) -> bool {
        !(self.ports.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.containers.is_empty())
    }

    /// The selection as command-line flags, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.extend(self.ports.iter().map(|p| format!("--port {p}")));
        parts.extend(self.comms.iter().map(|c| format!("--comm {c}")));
        parts.extend(self.cgroups.iter().map(|c| format!("--cgroup {c}")));
        parts.extend(self.containers.iter().map(|c| format!("--container {c}")));
        parts.join(" ")
    }
}

/// Released targets remembered at most (see `Targets::exited`): they leave `/proc` within
/// milliseconds of their exit, and every reconciliation prunes them.
const MAX_EXITED: usize = 4096;

/// Tracks the live target set: adds selected and forked processes, releases exited ones,
/// and registers the sockets they already had open. What it reads from `/proc` reaches the
/// processor as events ([`ProcessFact`], synthetic opens and closes), so recordings hold it
/// too. It keeps its own index of the sockets the kernel tracks, from the open and close
/// events, so ending a process's sockets needs no walk of the kernel map.
pub(super) struct Targets {
    pub(super) proc: Proc,
    pub(super) selector: TargetSelector,
    /// Every target, with its start time (`/proc/PID/stat`), which tells a reused pid apart.
    pub(super) known: BTreeMap<u32, u64>,
    /// Targets released on their exit event, with their start times, while `/proc` still
    /// shows them: a dying process is listed (not yet a zombie) for as long as the kernel
    /// takes to tear it down, and a scan that read it then must not take it again, since no
    /// second exit event would release it. Pruned once `/proc` no longer shows the process
    /// (or shows another one under its pid); at most [`MAX_EXITED`].
    exited: BTreeMap<u32, u64>,
    pub(super) sockets: SocketIndex,
    /// GPU compute processes already described to the processor.
    gpu_pids: BTreeSet<u32>,
}

impl Targets {
    pub(super) fn new(selector: TargetSelector) -> Self {
        Targets {
            proc: Proc::default(),
            selector,
            known: BTreeMap::new(),
            exited: BTreeMap::new(),
            sockets: SocketIndex::default(),
            gpu_pids: BTreeSet::new(),
        }
    }

    /// Adds `pid` as a target and tracks its open TCP connections; returns the fact of the
    /// process and synthetic open events for its connections, in that order.
    pub(super) fn add(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        stats: &mut PipelineStats,
    ) -> Result<Vec<CaptureEvent>, CaptureError> {
        // A process that exited since it was found (a scan read /proc a moment ago, its exit
        // event maybe handled already) is not taken again; its start time also names it
        // against a reused pid.
        let Some(start) = self.proc.start_time(pid) else {
            return Ok(Vec::new());
        };
        match self.exited.get(&pid) {
            Some(&t) if t == start => {
                stats.exited_targets_not_readded += 1;
                tracing::debug!("target {pid} exited already: not added again");
                return Ok(Vec::new());
            }
            // Another process under a reused pid.
            Some(_) => {
                self.exited.remove(&pid);
            }
            None => {}
        }
        capture.add_target(pid, self.selector.follow_children)?;
        if self.known.contains_key(&pid) {
            return Ok(Vec::new());
        }
        self.known.insert(pid, start);
        stats.targets_added += 1;
        tracing::debug!("target {pid} added (started at tick {start})");
        let now = monotonic_ns();
        let cgroups = self.proc.cgroups(pid);
        let sockets = self.proc.open_sockets(pid);
        let listening: BTreeSet<u16> = sockets
            .iter()
            .filter_map(|s| {
                s.tcp
                    .filter(|t| t.state == TCP_LISTEN)
                    .map(|t| t.local.port())
            })
            .collect();
        let mut events = vec![CaptureEvent::Process(ProcessFact {
            pid,
            ts_ns: now,
            ppid: self.proc.ppid(pid).filter(|p| self.known.contains_key(p)),
            container_id: container_id(&cgroups),
            pod_uid: pod_uid(&cgroups),
            listen_port: listening.first().copied().filter(|_| listening.len() == 1),
        })];
        let comm = self.proc.comm(pid).unwrap_or_default();
        for s in sockets {
            // Only established TCP connections: listening sockets carry no bytes, and unix
            // sockets found open are usually IPC; new ones are still tracked at accept.
            let Some(tcp) = s.tcp.filter(|t| t.state != TCP_LISTEN) else {
                continue;
            };
            let role = if listening.contains(&tcp.local.port()) {
                Role::Server
            } else {
                Role::Client
            };
            match capture.track_socket(pid, s.fd, role) {
                Ok(conn_id) => {
                    stats.preexisting_sockets += 1;
                    events.push(CaptureEvent::Open(SocketOpen {
                        key: ConnKey { tgid: pid, conn_id },
                        fd: s.fd,
                        ts_ns: now,
                        role,
                        peer: Some(tcp.remote),
                        comm: comm.clone(),
                        preexisting: true,
                    }));
                }
                Err(e) => tracing::debug!("not tracking fd {} of {pid}: {e}", s.fd),
            }
        }
        Ok(events)
    }

    /// Facts (their containers) about GPU compute processes not seen before that are not
    /// targets, whose own facts say as much.
    pub(super) fn describe_gpu_processes(&mut self, samples: &[DeviceSample]) -> Vec<CaptureEvent> {
        let mut facts = Vec::new();
        for p in samples.iter().flat_map(|s| &s.processes) {
            if self.known.contains_key(&p.pid) || self.gpu_pids.len() >= 4096 {
                continue;
            }
            if self.gpu_pids.insert(p.pid) {
                if let Some(id) = container_id(&self.proc.cgroups(p.pid)) {
                    facts.push(CaptureEvent::Process(ProcessFact {
                        pid: p.pid,
                        ts_ns: monotonic_ns(),
                        container_id: Some(id),
                        ..ProcessFact::default()
                    }));
                }
            }
        }
        facts
    }

    /// Adds the processes of a selection scan that are not targets yet; returns their
    /// events.
    pub(super) fn add_selected(
        &mut self,
        capture: &mut Capture,
        selected: &BTreeSet<u32>,
        stats: &mut PipelineStats,
        incidents: &Incidents,
    ) -> Vec<CaptureEvent> {
        let mut events = Vec::new();
        for &pid in selected {
            if self.known.contains_key(&pid) {
                continue;
            }
            match self.add(capture, pid, stats) {
                Ok(evs) => events.extend(evs),
                Err(error) => TargetNotAdded { pid, error: &error }.emit(incidents),
            }
        }
        events
    }

    fn release(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        stats: &mut PipelineStats,
    ) -> Vec<CaptureEvent> {
        capture.remove_target(pid);
        if let Some(start) = self.known.remove(&pid) {
            stats.targets_released += 1;
            tracing::debug!("target {pid} released");
            self.remember_exited(pid, start);
        }
        let now = monotonic_ns();
        self.sockets
            .take_process(pid)
            .into_iter()
            .map(|(fd, conn_id)| {
                capture.untrack_socket(pid, fd, conn_id);
                synthetic_close(pid, fd, conn_id, now)
            })
            .collect()
    }

    /// Remembers a released target while `/proc` may still show it; forgets the entries
    /// whose process is gone from `/proc` first when the table is full.
    fn remember_exited(&mut self, pid: u32, start: u64) {
        if self.exited.len() >= MAX_EXITED {
            self.prune_exited();
        }
        if self.exited.len() < MAX_EXITED {
            self.exited.insert(pid, start);
        }
    }

    /// Forgets released targets that `/proc` no longer shows as the same process.
    pub(super) fn prune_exited(&mut self) {
        let proc = &self.proc;
        self.exited
            .retain(|&pid, &mut start| proc.start_time(pid) == Some(start));
    }

    /// Ends the tracking of the sockets of `pid` in `fds` (closed without a close event:
    /// `close_range`, `execve`, or found gone by reconciliation).
    fn end_sockets(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        ended: Vec<(u32, u64)>,
        stats: &mut PipelineStats,
    ) -> Vec<CaptureEvent> {
        let now = monotonic_ns();
        ended
            .into_iter()
            .map(|(fd, conn_id)| {
                stats.sockets_closed_implicitly += 1;
                self.sockets.remove(ConnKey { tgid: pid, conn_id });
                capture.untrack_socket(pid, fd, conn_id);
                synthetic_close(pid, fd, conn_id, now)
            })
            .collect()
    }

    /// Applies a reconciliation of the kernel maps with `/proc` (see `scanner.rs`): targets
    /// that are gone (an exit event lost, a pid reused) are released, targets the kernel
    /// added that the session never heard of are added, sockets that are no longer open
    /// are ended. Returns the events for the processor.
    pub(super) fn reconcile(
        &mut self,
        capture: &mut Capture,
        found: &Reconciliation,
        stats: &mut PipelineStats,
        incidents: &Incidents,
    ) -> Vec<CaptureEvent> {
        self.prune_exited();
        let mut events = Vec::new();
        for &pid in &found.gone {
            // Known by its start time: a pid that was released and reused since the scan
            // read it is another process, not judged by this scan.
            let same = found
                .known_start
                .get(&pid)
                .is_none_or(|t| self.known.get(&pid) == Some(t));
            if same {
                tracing::debug!("target {pid} is gone (reconciliation)");
                stats.reconciled_targets += 1;
                events.extend(self.release(capture, pid, stats));
            }
        }
        for &pid in &found.unknown {
            if self.known.contains_key(&pid) {
                continue;
            }
            match self.add(capture, pid, stats) {
                // Empty when it exited since the scan.
                Ok(evs) if evs.is_empty() => {}
                Ok(evs) => {
                    tracing::debug!("target {pid} found in the kernel's map only (reconciliation)");
                    stats.reconciled_targets += 1;
                    events.extend(evs);
                }
                Err(error) => TargetNotAdded { pid, error: &error }.emit(incidents),
            }
        }
        for &(pid, fd, conn_id) in &found.stale_sockets {
            let key = ConnKey { tgid: pid, conn_id };
            match self.sockets.opened_ns(key) {
                // Opened after the scan read `/proc`: not judged by it.
                Some(opened) if opened >= found.started_ns => {}
                Some(_) => {
                    stats.reconciled_sockets += 1;
                    events.extend(self.end_sockets(capture, pid, vec![(fd, conn_id)], stats));
                }
                // The kernel map's alone (its open event was lost): no stream to close.
                None => {
                    stats.reconciled_sockets += 1;
                    capture.untrack_socket(pid, fd, conn_id);
                }
            }
        }
        events
    }

    /// What the scanner thread needs to judge the kernel's target map: the targets and
    /// their start times.
    pub(super) fn snapshot(&self) -> BTreeMap<u32, u64> {
        self.known.clone()
    }
}

fn synthetic_close(pid: u32, fd: u32, conn_id: u64, ts_ns: u64) -> CaptureEvent {
    CaptureEvent::Close(SocketClose {
        key: ConnKey { tgid: pid, conn_id },
        fd,
        ts_ns,
        final_seq: None,
    })
}

/// Applies a process event of the capture to the target set; returns synthetic events.
pub(super) fn apply_change(
    targets: &mut Targets,
    capture: &mut Capture,
    change: ProcessChange,
    stats: &mut PipelineStats,
    incidents: &Incidents,
) -> Vec<CaptureEvent> {
    match change {
        ProcessChange::Forked { child } => {
            // The kernel added the child (never a thread: it skips those).
            if targets.proc.tgid(child) == Some(child) {
                targets.add(capture, child, stats).unwrap_or_else(|error| {
                    TargetNotAdded {
                        pid: child,
                        error: &error,
                    }
                    .emit(incidents);
                    Vec::new()
                })
            } else {
                // Gone already (or not a process): its exit may have come first.
                capture.remove_target(child);
                Vec::new()
            }
        }
        ProcessChange::Exited { pid } => targets.release(capture, pid, stats),
        ProcessChange::ClosedRange { pid, first, last } => {
            let ended = targets.sockets.in_range(pid, first, last);
            targets.end_sockets(capture, pid, ended, stats)
        }
        ProcessChange::Execed { pid } => {
            // Close-on-exec sockets are gone: the tracked fds that are not sockets any more.
            let open: BTreeSet<u32> = targets
                .proc
                .socket_fds(pid)
                .into_iter()
                .map(|(fd, _)| fd)
                .collect();
            let ended = targets
                .sockets
                .in_range(pid, 0, u32::MAX)
                .into_iter()
                .filter(|(fd, _)| !open.contains(fd))
                .collect();
            targets.end_sockets(capture, pid, ended, stats)
        }
    }
}

/// The sockets the kernel tracks, as the session saw them open and close: by connection
/// and by process. Bounded by the kernel's socket map, whose entries its open events
/// announce; reconciliation removes what lost close events leave behind.
#[derive(Default)]
pub(super) struct SocketIndex {
    /// Connection → (fd, when it opened).
    by_conn: HashMap<ConnKey, (u32, u64)>,
    /// Process → fd → connection id.
    by_pid: HashMap<u32, BTreeMap<u32, u64>>,
}

impl SocketIndex {
    /// Follows an event the processor is about to handle.
    pub(super) fn observe(&mut self, event: &CaptureEvent) {
        match event {
            CaptureEvent::Open(o) => self.insert(o.key, o.fd, o.ts_ns),
            CaptureEvent::Close(c) => self.remove(c.key),
            _ => {}
        }
    }

    fn insert(&mut self, key: ConnKey, fd: u32, ts_ns: u64) {
        let fds = self.by_pid.entry(key.tgid).or_default();
        if let Some(old) = fds.insert(fd, key.conn_id) {
            // Its close was lost: the fd now names the new connection.
            self.by_conn.remove(&ConnKey {
                tgid: key.tgid,
                conn_id: old,
            });
        }
        self.by_conn.insert(key, (fd, ts_ns));
    }

    fn remove(&mut self, key: ConnKey) {
        let Some((fd, _)) = self.by_conn.remove(&key) else {
            return;
        };
        if let Some(fds) = self.by_pid.get_mut(&key.tgid) {
            if fds.get(&fd) == Some(&key.conn_id) {
                fds.remove(&fd);
            }
            if fds.is_empty() {
                self.by_pid.remove(&key.tgid);
            }
        }
    }

    /// The fd of a connection, if it is tracked.
    pub(super) fn fd(&self, key: ConnKey) -> Option<u32> {
        self.by_conn.get(&key).map(|&(fd, _)| fd)
    }

    fn opened_ns(&self, key: ConnKey) -> Option<u64> {
        self.by_conn.get(&key).map(|&(_, ts)| ts)
    }

    /// The sockets of `pid` with fds in `first..=last`, as `(fd, conn_id)` (none for a
    /// reversed range, which `close_range` refuses).
    fn in_range(&self, pid: u32, first: u32, last: u32) -> Vec<(u32, u64)> {
        if first > last {
            return Vec::new();
        }
        self.by_pid.get(&pid).map_or_else(Vec::new, |fds| {
            fds.range(first..=last)
                .map(|(&fd, &conn)| (fd, conn))
                .collect()
        })
    }

    /// Forgets every socket of `pid`; returns them as `(fd, conn_id)`.
    fn take_process(&mut self, pid: u32) -> Vec<(u32, u64)> {
        let fds = self.by_pid.remove(&pid).unwrap_or_default();
        for &conn_id in fds.values() {
            self.by_conn.remove(&ConnKey { tgid: pid, conn_id });
        }
        fds.into_iter().collect()
    }

    /// Sockets indexed now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_conn.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(tgid: u32, conn_id: u64, fd: u32, ts_ns: u64) -> CaptureEvent {
        CaptureEvent::Open(SocketOpen {
            key: ConnKey { tgid, conn_id },
            fd,
            ts_ns,
            role: Role::Server,
            peer: None,
            comm: String::new(),
            preexisting: false,
        })
    }

    #[test]
    fn socket_index_follows_opens_closes_and_reused_fds() {
        let mut index = SocketIndex::default();
        index.observe(&open(7, 1, 5, 10));
        index.observe(&open(7, 2, 6, 11));
        index.observe(&open(8, 3, 5, 12));
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.fd(ConnKey {
                tgid: 7,
                conn_id: 2
            }),
            Some(6)
        );
        // fd 5 of 7 reused without a close: the old connection is gone from the index.
        index.observe(&open(7, 4, 5, 13));
        assert_eq!(
            index.fd(ConnKey {
                tgid: 7,
                conn_id: 1
            }),
            None
        );
        assert_eq!(index.in_range(7, 0, u32::MAX), vec![(5, 4), (6, 2)]);
        assert_eq!(index.in_range(7, 6, 6), vec![(6, 2)]);
        assert!(index.in_range(7, 6, 5).is_empty());
        // A late close of the replaced connection does not end the new one.
        index.observe(&synthetic_close(7, 5, 1, 14));
        assert_eq!(index.in_range(7, 5, 5), vec![(5, 4)]);
        index.observe(&synthetic_close(7, 6, 2, 15));
        assert_eq!(index.take_process(7), vec![(5, 4)]);
        assert_eq!(index.len(), 1);
        assert!(index.in_range(7, 0, u32::MAX).is_empty());
        assert_eq!(
            index.opened_ns(ConnKey {
                tgid: 8,
                conn_id: 3
            }),
            Some(12)
        );
    }
}
