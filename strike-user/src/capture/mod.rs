//! Capture stage: loads the kernel programs, attaches them to the socket syscall and
//! scheduler tracepoints, and owns the maps that select what is captured (target processes,
//! their sockets). The ring buffer is handed to the session's reader task; its records decode
//! into `crate::event`.

pub mod capture_file;
pub mod privilege;
pub mod procfs;

use std::{fs, io, os::fd::AsFd as _, path::Path};

use aya::{
    maps::{HashMap as BpfHashMap, IterableMap as _, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use strike_common::{
    counter, role, sock_flag, target_flag, SockKey, SockState, TargetState, GLOBAL_CONTROL_RESERVE,
    GLOBAL_MAX_CAPTURE, GLOBAL_NEWTASK_FLAGS_OFF, GLOBAL_NEWTASK_PID_OFF, MAP_COUNTERS, MAP_EVENTS,
    MAP_SOCKS, MAP_TARGETS, USER_CONN_ID_BIT,
};

use crate::conn::Role;

/// The compiled kernel programs (see `build.rs`). Empty when the build had no BPF toolchain.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strike-ebpf.o"));

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// [`TRACEFS`] for mount(2).
const TRACEFS_C: &std::ffi::CStr = c"/sys/kernel/tracing";
pub const BTF: &str = "/sys/kernel/btf/vmlinux";

/// (program, category, tracepoint): every attachment Strike makes.
const ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("enter_read", "syscalls", "sys_enter_read"),
    ("exit_read", "syscalls", "sys_exit_read"),
    ("enter_write", "syscalls", "sys_enter_write"),
    ("exit_write", "syscalls", "sys_exit_write"),
    ("enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("enter_sendto", "syscalls", "sys_enter_sendto"),
    ("exit_sendto", "syscalls", "sys_exit_sendto"),
    ("enter_readv", "syscalls", "sys_enter_readv"),
    ("exit_readv", "syscalls", "sys_exit_readv"),
    ("enter_writev", "syscalls", "sys_enter_writev"),
    ("exit_writev", "syscalls", "sys_exit_writev"),
    ("enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("enter_accept", "syscalls", "sys_enter_accept"),
    ("enter_accept", "syscalls", "sys_enter_accept4"),
    ("enter_connect", "syscalls", "sys_enter_connect"),
    ("exit_accept", "syscalls", "sys_exit_accept"),
    ("exit_accept", "syscalls", "sys_exit_accept4"),
    ("exit_connect", "syscalls", "sys_exit_connect"),
    ("enter_close", "syscalls", "sys_enter_close"),
    ("enter_close_range", "syscalls", "sys_enter_close_range"),
    ("enter_dup", "syscalls", "sys_enter_dup"),
    ("enter_dup2", "syscalls", "sys_enter_dup2"),
    ("enter_dup2", "syscalls", "sys_enter_dup3"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_exit", "sched", "sched_process_exit"),
    ("sched_exec", "sched", "sched_process_exec"),
];

/// Tracepoints some architectures or older kernels lack: attached where they exist
/// (arm64 has no `dup2`; `close_range` is Linux 5.9).
const OPTIONAL: &[&str] = &["sys_enter_dup2", "sys_enter_close_range"];

/// The tracepoints Strike attaches, as `category/name`, that tracefs lacks: `required` ones
/// stop capture from starting; `optional` ones are skipped (see [`OPTIONAL`]).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct MissingTracepoints {
    pub present: usize,
    pub required: Vec<String>,
    pub optional: Vec<String>,
}

/// Which of [`ATTACHMENTS`] exist in tracefs now.
pub fn missing_tracepoints() -> MissingTracepoints {
    let mut out = MissingTracepoints::default();
    for &(_, category, name) in ATTACHMENTS {
        let events = Path::new(TRACEFS).join("events");
        if events.join(category).join(name).exists() {
            out.present += 1;
        } else if OPTIONAL.contains(&name) {
            out.optional.push(format!("{category}/{name}"));
        } else {
            out.required.push(format!("{category}/{name}"));
        }
    }
    out
}

/// Whether the compiled kernel programs are in this binary (a build without the BPF
/// toolchain has none).
pub fn has_programs() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// Settings of the kernel side, as validated by `config` (the one place that checks
/// settings; the kernel program clamps the cap again on its side).
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Bytes captured from one syscall at most; the rest is reported as truncated.
    pub max_capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            max_capture_bytes: strike_common::DEFAULT_MAX_CAPTURE,
            ring_bytes: 16 << 20,
        }
    }
}

/// Why capture could not start. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("missing capabilities: {}. Run strike as root (`sudo strike ...`), or give it these capabilities: `sudo setcap {} \"$(command -v strike)\"`, or in Kubernetes `securityContext.capabilities.add: [{}]`", privilege::describe(missing), privilege::setcap_list(), privilege::kubernetes_list())]
    MissingCapabilities {
        missing: Vec<&'static privilege::Requirement>,
    },
    #[error("cannot read the effective capabilities from /proc/self/status")]
    Capabilities(#[source] io::Error),
    #[error("tracefs is not available at {TRACEFS} and mounting it failed ({source}); mount it with `mount -t tracefs tracefs {TRACEFS}` (mounting needs CAP_SYS_ADMIN; in a container, mount the host's {TRACEFS} read-only)")]
    NoTracefs {
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {category}/{name} does not exist on this kernel (is CONFIG_FTRACE_SYSCALLS enabled?)")]
    MissingTracepoint { category: String, name: String },
    #[error("this strike binary was built without its eBPF programs (no BPF toolchain at build time); run `cargo xtask setup` and rebuild")]
    NoObject,
    #[error("loading the eBPF programs failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel rejected program {program}")]
    Program {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {name} is missing or has the wrong type")]
    Map {
        name: &'static str,
        #[source]
        source: Option<Box<aya::maps::MapError>>,
    },
    #[error("updating eBPF map {name}")]
    MapUpdate {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub events: u64,
    pub bytes: u64,
    pub ringbuf_full: u64,
    pub truncated_calls: u64,
    pub truncated_bytes: u64,
    pub socks_map_full: u64,
    pub pending_map_full: u64,
    pub read_faults: u64,
    pub targets_map_full: u64,
    /// Control events lost although the ring keeps space for them (see `control_reserve`).
    pub control_events_lost: u64,
    /// `dup` copies of tracked sockets, whose bytes are not captured.
    pub socket_dups: u64,
    /// Data syscalls on connections marked ignored (not HTTP), not copied.
    pub ignored_calls: u64,
}

/// The loaded and attached kernel programs and their control maps.
pub struct Capture {
    // Keeps the programs attached; dropping it detaches everything.
    _ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    targets: BpfHashMap<MapData, u32, TargetState>,
    socks: BpfHashMap<MapData, SockKey, SockState>,
    counters: PerCpuArray<MapData, u64>,
    next_user_conn: u64,
    /// Programs loaded and tracepoints attached.
    attached: (usize, usize),
}

/// Checks what loading needs: the capabilities of [`privilege::REQUIREMENTS`] (root has
/// them; so may any uid), and tracefs, mounting it if it is not mounted yet (which needs
/// `CAP_SYS_ADMIN`). A missing BTF is only a warning: Strike's programs use no CO-RE
/// relocations.
pub fn preflight() -> Result<(), CaptureError> {
    let caps = privilege::effective().map_err(CaptureError::Capabilities)?;
    let missing = privilege::missing(caps);
    if !missing.is_empty() {
        return Err(CaptureError::MissingCapabilities { missing });
    }
    if !Path::new(TRACEFS).join("events").join("syscalls").exists() {
        mount_tracefs().map_err(|source| CaptureError::NoTracefs { source })?;
    }
    if !Path::new(BTF).exists() {
        tracing::warn!("{BTF} is missing: the kernel has no BTF; Strike does not need it, but some verifier messages will be less precise");
    }
    Ok(())
}

/// mount(2) itself, not mount(8): util-linux refuses non-root callers whatever their
/// capabilities, and `CAP_SYS_ADMIN` is all the syscall asks for.
fn mount_tracefs() -> io::Result<()> {
    let fs = c"tracefs";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no data.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            TRACEFS_C.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if Path::new(TRACEFS).join("events").join("syscalls").exists() {
        Ok(())
    } else {
        Err(io::Error::other("mounted, but it has no events/syscalls"))
    }
}

/// Offsets of `pid` and `clone_flags` in `task/task_newtask`, from its format file.
fn newtask_offsets() -> Result<(u32, u32), CaptureError> {
    let path = format!("{TRACEFS}/events/task/task_newtask/format");
    let missing = || CaptureError::MissingTracepoint {
        category: "task".into(),
        name: "task_newtask".into(),
    };
    let text = fs::read_to_string(path).map_err(|_| missing())?;
    let pid = parse_field_offset(&text, "pid").ok_or_else(missing)?;
    let flags = parse_field_offset(&text, "clone_flags").ok_or_else(missing)?;
    Ok((pid, flags))
}

/// Ring buffer bytes kept for control events: an eighth of the ring, at least 64 KiB but
/// never more than half (a control event is 40 to 72 bytes: a 16 MiB ring keeps room for
/// some 30,000 of them however far the reader falls behind on data).
fn control_reserve(ring_bytes: u32) -> u64 {
    let ring = u64::from(ring_bytes);
    (ring / 8).max(64 * 1024).min(ring / 2)
}

/// Finds `offset:N;` of the field named `name` in a tracepoint format file.
fn parse_field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let field = decl.rsplit([' ', '*']).next()?;
        if field != name {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer. Kernels >= 5.11 account BPF memory to the
    // cgroup instead, so a failure here only matters on old kernels.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) } != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            io::Error::last_os_error()
        );
    }
}

impl Capture {
    /// Loads and attaches every program. Requires [`preflight`] to have passed.
    pub fn load(config: &CaptureConfig) -> Result<Capture, CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        raise_memlock();
        let (pid_off, flags_off) = newtask_offsets()?;
        let reserve = control_reserve(config.ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_MAX_CAPTURE, &config.max_capture_bytes, true)
            .override_global(GLOBAL_NEWTASK_PID_OFF, &pid_off, true)
            .override_global(GLOBAL_NEWTASK_FLAGS_OFF, &flags_off, true)
            .override_global(GLOBAL_CONTROL_RESERVE, &reserve, true)
            .map_max_entries(MAP_EVENTS, config.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| CaptureError::Load(Box::new(e)))?;

        let mut loaded: Vec<&str> = Vec::new();
        let mut attached = 0;
        for &(program, category, name) in ATTACHMENTS {
            if !Path::new(TRACEFS)
                .join("events")
                .join(category)
                .join(name)
                .exists()
            {
                if OPTIONAL.contains(&name) {
                    tracing::debug!("{category}/{name} does not exist here: not attached");
                    continue;
                }
                return Err(CaptureError::MissingTracepoint {
                    category: category.into(),
                    name: name.into(),
                });
            }
            let prog_err = |source| CaptureError::Program {
                program: program.into(),
                source: Box::new(source),
            };
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| CaptureError::Map {
                    name: "program missing from object",
                    source: None,
                })?
                .try_into()
                .map_err(prog_err)?;
            if !loaded.contains(&program) {
                tp.load().map_err(prog_err)?;
                loaded.push(program);
            }
            tp.attach(category, name).map_err(prog_err)?;
            attached += 1;
        }

        let ring = RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?)
            .map_err(|e| map_err(MAP_EVENTS, e))?;
        let targets = BpfHashMap::try_from(take_map(&mut ebpf, MAP_TARGETS)?)
            .map_err(|e| map_err(MAP_TARGETS, e))?;
        let socks = BpfHashMap::try_from(take_map(&mut ebpf, MAP_SOCKS)?)
            .map_err(|e| map_err(MAP_SOCKS, e))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?)
            .map_err(|e| map_err(MAP_COUNTERS, e))?;
        Ok(Capture {
            _ebpf: ebpf,
            ring: Some(ring),
            targets,
            socks,
            counters,
            next_user_conn: 0,
            attached: (loaded.len(), attached),
        })
    }

    /// Programs loaded and tracepoints attached, for `strike check`.
    pub fn attached(&self) -> (usize, usize) {
        self.attached
    }

    /// The ring buffer, for the reader task (once).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// Starts capturing `tgid`; with `follow`, the kernel makes its children targets as
    /// they are created.
    pub fn add_target(&mut self, tgid: u32, follow: bool) -> Result<(), CaptureError> {
        let state = TargetState {
            origin: 1,
            flags: if follow { target_flag::FOLLOW } else { 0 },
        };
        self.targets
            .insert(tgid, state, 0)
            .map_err(|e| CaptureError::MapUpdate {
                name: MAP_TARGETS,
                source: Box::new(e),
            })
    }

    /// Stops capturing `tgid` (absent is fine).
    pub fn remove_target(&mut self, tgid: u32) {
        let _ = self.targets.remove(&tgid);
    }

    /// Every tgid in the target map (including ones the kernel added on fork).
    pub fn targets(&self) -> Vec<u32> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    /// Tracks a socket that was already open, with a userspace connection id; returns it.
    pub fn track_socket(
        &mut self,
        tgid: u32,
        fd: u32,
        sock_role: Role,
    ) -> Result<u64, CaptureError> {
        self.next_user_conn += 1;
        let conn_id = USER_CONN_ID_BIT | self.next_user_conn;
        let state = SockState {
            conn_id,
            seq: [0; 2],
            role: match sock_role {
                Role::Server => role::SERVER,
                Role::Client => role::CLIENT,
                Role::Unknown => role::UNKNOWN,
            },
            flags: 0,
            pad: [0; 6],
        };
        // BPF_NOEXIST: a socket the kernel started tracking meanwhile keeps its id.
        self.socks
            .insert(SockKey { tgid, fd }, state, BPF_NOEXIST)
            .map_err(|e| CaptureError::MapUpdate {
                name: MAP_SOCKS,
                source: Box::new(e),
            })?;
        Ok(conn_id)
    }

    /// Stops tracking `fd` of `tgid` if it is still connection `conn_id` (the kernel may
    /// have tracked a new socket at that fd meanwhile, which keeps its entry). Between the
    /// read and the removal the kernel may replace the entry: a window of one syscall.
    pub fn untrack_socket(&mut self, tgid: u32, fd: u32, conn_id: u64) {
        let key = SockKey { tgid, fd };
        if self.socks.get(&key, 0).is_ok_and(|s| s.conn_id == conn_id) {
            let _ = self.socks.remove(&key);
        }
    }

    /// Marks connection `conn_id` at `fd` of `tgid` ignored: the kernel stops copying its
    /// bytes. Returns whether it was still there. The update rewrites the whole entry, so a
    /// socket the kernel tracked at that fd between the read and the write would inherit
    /// the old entry: a window of one syscall, taken only for connections found not HTTP.
    pub fn ignore_socket(&mut self, tgid: u32, fd: u32, conn_id: u64) -> bool {
        let key = SockKey { tgid, fd };
        let Ok(mut state) = self.socks.get(&key, 0) else {
            return false;
        };
        if state.conn_id != conn_id {
            return false;
        }
        state.flags |= sock_flag::IGNORE;
        self.socks.insert(key, state, BPF_EXIST).is_ok()
    }

    /// Second handles on the target and socket maps, for walking them off the data path.
    pub fn map_view(&self) -> Result<MapView, CaptureError> {
        fn reopen<K: aya::Pod, V: aya::Pod>(
            map: &BpfHashMap<MapData, K, V>,
            name: &'static str,
        ) -> Result<BpfHashMap<MapData, K, V>, CaptureError> {
            let fd = map
                .map()
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| map_err(name, aya::maps::MapError::from(e)))?;
            let data = MapData::from_fd(fd).map_err(|e| map_err(name, e))?;
            BpfHashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|e| map_err(name, e))
        }
        Ok(MapView {
            targets: reopen(&self.targets, MAP_TARGETS)?,
            socks: reopen(&self.socks, MAP_SOCKS)?,
        })
    }

    /// The kernel counters, summed over CPUs.
    pub fn counters(&self) -> KernelCounters {
        let get =
            |index: u32| -> u64 { self.counters.get(&index, 0).map_or(0, |v| v.iter().sum()) };
        KernelCounters {
            events: get(counter::EVENTS),
            bytes: get(counter::BYTES),
            ringbuf_full: get(counter::RINGBUF_FULL),
            truncated_calls: get(counter::TRUNCATED_CALLS),
            truncated_bytes: get(counter::TRUNCATED_BYTES),
            socks_map_full: get(counter::SOCKS_FULL),
            pending_map_full: get(counter::PENDING_FULL),
            read_faults: get(counter::READ_FAULTS),
            targets_map_full: get(counter::TARGETS_FULL),
            control_events_lost: get(counter::CONTROL_LOST),
            socket_dups: get(counter::DUP_ALIASES),
            ignored_calls: get(counter::IGNORED_CALLS),
        }
    }
}

/// The target and socket maps, read-only, through handles of their own: what the session's
/// scanner thread walks to reconcile them with `/proc`.
pub struct MapView {
    targets: BpfHashMap<MapData, u32, TargetState>,
    socks: BpfHashMap<MapData, SockKey, SockState>,
}

impl MapView {
    /// Every tgid in the target map.
    pub fn target_pids(&self) -> Vec<u32> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    /// Every socket the kernel tracks, as `(tgid, fd, conn_id)`.
    pub fn sockets(&self) -> Vec<(u32, u32, u64)> {
        self.socks
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.tgid, k.fd, v.conn_id))
            .collect()
    }
}

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only if the key is present.
const BPF_EXIST: u64 = 2;

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or(CaptureError::Map { name, source: None })
}

fn map_err(name: &'static str, e: aya::maps::MapError) -> CaptureError {
    CaptureError::Map {
        name,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_paths_agree() {
        assert_eq!(TRACEFS_C.to_str(), Ok(TRACEFS));
    }

    const FORK_6_18: &str = "name: sched_process_fork
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const FORK_OLD: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    const NEWTASK_6_18: &str = "name: task_newtask
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;
\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:40;\tsize:2;\tsigned:1;
";

    #[test]
    fn finds_newtask_offsets_not_common_pid() {
        assert_eq!(parse_field_offset(NEWTASK_6_18, "pid"), Some(8));
        assert_eq!(parse_field_offset(NEWTASK_6_18, "clone_flags"), Some(32));
    }

    #[test]
    fn control_reserve_is_an_eighth_within_bounds() {
        assert_eq!(control_reserve(16 << 20), 2 << 20);
        assert_eq!(control_reserve(256 << 10), 64 << 10);
        assert_eq!(control_reserve(64 << 10), 32 << 10);
    }

    #[test]
    fn finds_fork_offsets_on_old_and_new_kernels() {
        assert_eq!(parse_field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_OLD, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_OLD, "nope"), None);
    }
}
