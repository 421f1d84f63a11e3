//! The scanner thread: the session's walks of `/proc` and of the kernel maps, off the data
//! path. Finding the processes a port or name selects reads every fd of every process;
//! reconciling the socket map walks up to 65,536 entries. Neither may hold up the
//! processor, so this thread does both and sends what it found; the session applies it
//! between batches ([`super::targets::Targets::add_selected`], `reconcile`).
//!
//! Reconciliation repairs what lost control events (or syscalls Strike does not follow)
//! leave behind: a target whose exit was lost, a pid reused by another process (told apart
//! by its start time), a child the kernel added whose fork event was lost, a socket whose
//! close was lost or that `dup2`, `fcntl` or another process's action ended unseen.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::targets::TargetSelector;
use crate::{
    capture::{procfs::Proc, MapView},
    clock::monotonic_ns,
};

/// What a scan found.
pub(super) enum Scan {
    /// The processes the selection matches now.
    Selected(BTreeSet<u32>),
    Reconciled(Reconciliation),
}

/// The kernel maps against `/proc`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Reconciliation {
    /// Kernel time before the scan read anything: sockets opened since are not judged.
    pub(super) started_ns: u64,
    /// Targets (in the kernel map or the session's set) that no longer run, or whose pid
    /// now names another process.
    pub(super) gone: Vec<u32>,
    /// The start times the scan judged `gone` targets by: the session releases one only
    /// if it still knows it by that start time.
    pub(super) known_start: BTreeMap<u32, u64>,
    /// Live processes in the kernel's target map that the session does not know (their
    /// fork event was lost).
    pub(super) unknown: Vec<u32>,
    /// Socket map entries `(tgid, fd, conn_id)` whose process is not a live target or
    /// whose fd is no longer a socket.
    pub(super) stale_sockets: Vec<(u32, u32, u64)>,
}

/// How often the scanner looks.
pub(super) struct ScanSchedule {
    /// The selection, when it can gain processes (ports, names, cgroups, containers).
    pub(super) selector: Option<TargetSelector>,
    pub(super) rescan: Duration,
    pub(super) reconcile: Duration,
}

/// The scanner thread, its results, and the targets it judges by.
pub(super) struct Scanner {
    pub(super) results: mpsc::Receiver<Scan>,
    /// The session's targets and their start times, as the session last published them.
    known: Arc<Mutex<BTreeMap<u32, u64>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Scanner {
    /// Starts the thread. A full queue skips a scan's result (the next one says the same,
    /// newer).
    pub(super) fn start(
        schedule: ScanSchedule,
        maps: MapView,
        known: BTreeMap<u32, u64>,
    ) -> std::io::Result<Scanner> {
        let known = Arc::new(Mutex::new(known));
        let (tx, results) = mpsc::channel::<Scan>(4);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_known, thread_stop) = (Arc::clone(&known), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("strike-scanner".into())
            .spawn(move || run(&schedule, &maps, &thread_known, &tx, &thread_stop))?;
        Ok(Scanner {
            results,
            known,
            stop,
            thread,
        })
    }

    /// The session's targets now, for the next reconciliation.
    pub(super) fn publish(&self, known: BTreeMap<u32, u64>) {
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = known;
    }

    /// Tells the thread to stop; returns it to join.
    pub(super) fn stop(self) -> JoinHandle<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
    }
}

fn run(
    schedule: &ScanSchedule,
    maps: &MapView,
    known: &Mutex<BTreeMap<u32, u64>>,
    tx: &mpsc::Sender<Scan>,
    stop: &AtomicBool,
) {
    let proc = Proc::default();
    let mut next_rescan = Instant::now() + schedule.rescan;
    let mut next_reconcile = Instant::now() + schedule.reconcile;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if let Some(selector) = schedule.selector.as_ref().filter(|_| now >= next_rescan) {
            next_rescan = now + schedule.rescan;
            let _ = tx.try_send(Scan::Selected(selector.resolve(&proc)));
        }
        if now >= next_reconcile {
            next_reconcile = now + schedule.reconcile;
            let known = known.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let _ = tx.try_send(Scan::Reconciled(reconcile(&proc, maps, &known)));
        }
    }
}

/// One reconciliation pass. The socket map is read first, `/proc` after: a socket the
/// kernel tracked is in its process's fd table from before its entry was made, so one
/// absent from `/proc` afterwards is truly gone.
fn reconcile(proc: &Proc, maps: &MapView, known: &BTreeMap<u32, u64>) -> Reconciliation {
    let started_ns = monotonic_ns();
    let sockets = maps.sockets();
    let kernel_targets: BTreeSet<u32> = maps.target_pids().into_iter().collect();
    judge(
        started_ns,
        &sockets,
        &kernel_targets,
        known,
        |pid| proc.start_time(pid),
        |pid| proc.socket_fds(pid).into_iter().map(|(fd, _)| fd).collect(),
    )
}

/// The judgement of one pass, apart from the reads it rests on.
fn judge(
    started_ns: u64,
    sockets: &[(u32, u32, u64)],
    kernel_targets: &BTreeSet<u32>,
    known: &BTreeMap<u32, u64>,
    start_time: impl Fn(u32) -> Option<u64>,
    socket_fds: impl Fn(u32) -> BTreeSet<u32>,
) -> Reconciliation {
    let mut found = Reconciliation {
        started_ns,
        ..Reconciliation::default()
    };
    let mut live = BTreeSet::new();
    for &pid in kernel_targets.iter().chain(known.keys()) {
        if live.contains(&pid) || found.gone.contains(&pid) {
            continue;
        }
        match (start_time(pid), known.get(&pid)) {
            (Some(now), Some(&then)) if now != then => {
                found.gone.push(pid);
                found.known_start.insert(pid, then);
            }
            (None, then) => {
                found.gone.push(pid);
                if let Some(&then) = then {
                    found.known_start.insert(pid, then);
                }
            }
            (Some(_), None) => {
                found.unknown.push(pid);
                live.insert(pid);
            }
            (Some(_), Some(_)) => {
                live.insert(pid);
            }
        }
    }
    let mut open: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for &(tgid, fd, conn_id) in sockets {
        let stale = if live.contains(&tgid) {
            !open
                .entry(tgid)
                .or_insert_with(|| socket_fds(tgid))
                .contains(&fd)
        } else {
            true
        };
        if stale {
            found.stale_sockets.push((tgid, fd, conn_id));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_gone_reused_unknown_targets_and_stale_sockets() {
        // 10: a known target, alive, same start. 11: known, gone (exit lost). 12: known,
        // pid reused (another start time). 13: in the kernel map only, alive (fork lost).
        // 14: in the kernel map only, gone.
        let known = BTreeMap::from([(10, 100), (11, 110), (12, 120)]);
        let kernel = BTreeSet::from([10, 12, 13, 14]);
        let starts = BTreeMap::from([(10, 100), (12, 999), (13, 130)]);
        let sockets = [
            (10, 5, 1), // open: kept
            (10, 6, 2), // fd 6 is no longer a socket: stale
            (11, 5, 3), // process gone: stale
            (13, 7, 4), // the unknown target's, open: kept
            (99, 3, 5), // not a target at all: stale
        ];
        let fds = |pid| match pid {
            10 => BTreeSet::from([5]),
            13 => BTreeSet::from([7]),
            _ => BTreeSet::new(),
        };
        let found = judge(
            42,
            &sockets,
            &kernel,
            &known,
            |p| starts.get(&p).copied(),
            fds,
        );
        assert_eq!(found.started_ns, 42);
        assert_eq!(found.gone, vec![12, 14, 11]);
        assert_eq!(found.known_start, BTreeMap::from([(11, 110), (12, 120)]));
        assert_eq!(found.unknown, vec![13]);
        assert_eq!(
            found.stale_sockets,
            vec![(10, 6, 2), (11, 5, 3), (99, 3, 5)]
        );
    }
}
