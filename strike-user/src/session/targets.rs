//! What to trace ([`TargetSelector`], also the `targets` section of `strike run`'s
//! configuration) and the live target set ([`Targets`]), which turns what it reads from
//! `/proc` into events for the processor.

use std::collections::BTreeSet;

use super::{
    incident::{Incident as _, Incidents, TargetNotAdded},
    processor::ProcessChange,
    Processor,
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
    record::RequestRecord,
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

/// Tracks the live target set: adds selected and forked processes, prunes threads, releases
/// exited processes, and registers the sockets they already had open. What it reads from
/// `/proc` reaches the processor as events ([`ProcessFact`], synthetic opens and closes), so
/// recordings hold it too.
pub(super) struct Targets {
    pub(super) proc: Proc,
    pub(super) selector: TargetSelector,
    pub(super) known: BTreeSet<u32>,
    /// GPU compute processes already described to the processor.
    gpu_pids: BTreeSet<u32>,
}

impl Targets {
    pub(super) fn new(selector: TargetSelector) -> Self {
        Targets {
            proc: Proc::default(),
            selector,
            known: BTreeSet::new(),
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
        capture.add_target(pid)?;
        if !self.known.insert(pid) {
            return Ok(Vec::new());
        }
        stats.targets_added += 1;
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
            ppid: self.proc.ppid(pid).filter(|p| self.known.contains(p)),
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
            if self.known.contains(&p.pid) || self.gpu_pids.len() >= 4096 {
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

    /// Picks up processes that newly match a port or name selection.
    pub(super) fn rescan(
        &mut self,
        capture: &mut Capture,
        processor: &mut Processor,
        records: &mut Vec<RequestRecord>,
    ) {
        for pid in self.selector.resolve(&self.proc) {
            if self.known.contains(&pid) {
                continue;
            }
            match self.add(capture, pid, &mut processor.stats) {
                Ok(events) => {
                    for ev in events {
                        processor.handle(ev, records);
                    }
                }
                Err(error) => {
                    TargetNotAdded { pid, error: &error }.emit(processor.incidents());
                }
            }
        }
    }

    fn release(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        stats: &mut PipelineStats,
    ) -> Vec<CaptureEvent> {
        capture.remove_target(pid);
        if self.known.remove(&pid) {
            stats.targets_released += 1;
        }
        let now = monotonic_ns();
        capture
            .untrack_process(pid)
            .into_iter()
            .map(|(fd, conn_id)| {
                CaptureEvent::Close(SocketClose {
                    key: ConnKey { tgid: pid, conn_id },
                    fd,
                    ts_ns: now,
                    final_seq: None,
                })
            })
            .collect()
    }
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
            // The kernel added the child; a thread shares its parent's tgid and is removed.
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
                capture.remove_target(child);
                Vec::new()
            }
        }
        ProcessChange::Exited { pid } => targets.release(capture, pid, stats),
    }
}
