//! Types shared by the kernel programs (`strike-ebpf`) and userspace (`strike-user`).
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is
//! `#[repr(C)]`, `Copy`, has explicit padding, no `bool`, and its size is asserted at
//! compile time. Each ring-buffer record starts with an [`EventHeader`]: the decoder in
//! `strike-user/src/event.rs` relies on that to dispatch on [`EventHeader::kind`].
#![no_std]

/// Ring buffer carrying every event to userspace.
pub const MAP_EVENTS: &str = "EVENTS";
/// `tgid -> TargetState`: the processes whose sockets are captured.
pub const MAP_TARGETS: &str = "TARGETS";
/// `SockKey -> SockState`: the socket fds of target processes.
pub const MAP_SOCKS: &str = "SOCKS";
/// Per-CPU counters, indexed by the `counter::*` constants.
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Name of the global that caps the bytes captured from one syscall.
pub const GLOBAL_MAX_CAPTURE: &str = "MAX_CAPTURE_BYTES";
/// Name of the global with the offset of `pid` in `task/task_newtask`.
pub const GLOBAL_NEWTASK_PID_OFF: &str = "NEWTASK_PID_OFF";
/// Name of the global with the offset of `clone_flags` in `task/task_newtask`.
pub const GLOBAL_NEWTASK_FLAGS_OFF: &str = "NEWTASK_FLAGS_OFF";
/// Name of the global with the ring buffer bytes kept free for control events: a data
/// event is dropped (counted) rather than fill them, so opens, closes, forks and exits are
/// not lost with data when the reader falls behind.
pub const GLOBAL_CONTROL_RESERVE: &str = "CONTROL_RESERVE_BYTES";

/// Payload bytes carried by one data event. A syscall that moved more is split into
/// several events, each with its own stream offset.
pub const DATA_CHUNK: usize = 16 * 1024;
/// Upper bound of data events per syscall (with `MAX_IOV_SEGMENTS`, the `bpf_loop` bound): `DATA_CHUNK * MAX_CHUNKS`
/// is the largest per-syscall capture cap userspace may configure.
pub const MAX_CHUNKS: u32 = 64;
/// Largest configurable per-syscall capture cap (1 MiB).
#[expect(
    clippy::cast_possible_truncation,
    reason = "DATA_CHUNK * MAX_CHUNKS is 1 MiB, far below u32::MAX"
)]
pub const MAX_CAPTURE_LIMIT: u32 = DATA_CHUNK as u32 * MAX_CHUNKS;
/// Default per-syscall capture cap: large enough for real prompts.
pub const DEFAULT_MAX_CAPTURE: u32 = 256 * 1024;
/// Most iovec segments walked per `readv`/`writev`/`recvmsg`/`sendmsg` call.
pub const MAX_IOV_SEGMENTS: u32 = 1024;

/// Event kinds, stored in [`EventHeader::kind`].
pub mod kind {
    /// [`crate::DataEvent`]: bytes read from or written to a tracked socket.
    pub const DATA: u8 = 1;
    /// [`crate::OpenEvent`]: a socket fd started being tracked (accept or connect).
    pub const OPEN: u8 = 2;
    /// [`crate::CloseEvent`]: a tracked socket fd was closed.
    pub const CLOSE: u8 = 3;
    /// [`crate::ProcEvent`]: a target process forked (the child is now a target).
    pub const FORK: u8 = 4;
    /// [`crate::ProcEvent`]: a target process exited.
    pub const EXIT: u8 = 5;
    /// [`crate::ProcEvent`]: a target process called `execve` (its close-on-exec sockets
    /// are gone; userspace checks which).
    pub const EXEC: u8 = 6;
    /// [`crate::CloseRangeEvent`]: a target process closed a range of fds at once.
    pub const CLOSE_RANGE: u8 = 7;
}

/// Flags in [`EventHeader::flags`].
pub mod flag {
    /// The syscall moved more bytes than the capture cap: the bytes after this event's
    /// end, up to `call_len`, were not captured.
    pub const TRUNCATED: u8 = 1 << 0;
    /// Reading the user buffer failed: this event's `len` bytes are missing (zeroes are not sent).
    pub const READ_FAULT: u8 = 1 << 1;
}

/// Data direction, seen from the traced process.
pub mod direction {
    /// Bytes the traced process read from the socket.
    pub const INGRESS: u8 = 0;
    /// Bytes the traced process wrote to the socket.
    pub const EGRESS: u8 = 1;
}

/// Flags in [`SockState::flags`].
pub mod sock_flag {
    /// Userspace gave up on the connection (not HTTP, or upgraded to another protocol):
    /// its bytes are no longer copied.
    pub const IGNORE: u8 = 1 << 0;
}

/// Which end of the connection the traced process is.
pub mod role {
    /// Unknown: a socket found already open when Strike started, before userspace classified it.
    pub const UNKNOWN: u8 = 0;
    /// The traced process accepted the connection: requests arrive as ingress bytes.
    pub const SERVER: u8 = 1;
    /// The traced process connected out: requests leave as egress bytes.
    pub const CLIENT: u8 = 2;
}

/// Indices into the per-CPU counter array.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Payload bytes written to the ring buffer.
    pub const BYTES: u32 = 1;
    /// Events lost because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 2;
    /// Syscalls whose payload exceeded the capture cap.
    pub const TRUNCATED_CALLS: u32 = 3;
    /// Bytes not captured because of the capture cap.
    pub const TRUNCATED_BYTES: u32 = 4;
    /// Sockets not tracked because the socket map was full.
    pub const SOCKS_FULL: u32 = 5;
    /// Syscalls not captured because the per-thread pending map was full.
    pub const PENDING_FULL: u32 = 6;
    /// User-memory reads that failed.
    pub const READ_FAULTS: u32 = 7;
    /// Targets not added on fork because the target map was full.
    pub const TARGETS_FULL: u32 = 8;
    /// Control events (open, close, fork, exit, exec, `close_range`) lost because the ring
    /// buffer was full even in the space reserved for them.
    pub const CONTROL_LOST: u32 = 9;
    /// `dup`/`dup2`/`dup3` of a tracked socket: the copy's bytes are not captured.
    pub const DUP_ALIASES: u32 = 10;
    /// Data syscalls on connections userspace marked ignored (not copied).
    pub const IGNORED_CALLS: u32 = 11;
    /// Number of counters.
    pub const COUNT: u32 = 12;
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `kind::*` constants.
    pub kind: u8,
    /// `flag::*` bits.
    pub flags: u8,
    pub pad: [u8; 2],
    /// Process id (thread group id) of the traced process.
    pub tgid: u32,
    /// Thread id that made the syscall.
    pub tid: u32,
    /// The socket fd (0 for process events).
    pub fd: u32,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC` nanoseconds at the syscall's exit.
    pub ts_ns: u64,
    /// Connection id assigned when the fd started being tracked; unique for the session,
    /// so a reused fd never mixes two connections.
    pub conn_id: u64,
}

/// Bytes moved by one syscall on a tracked socket, or one chunk of them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: EventHeader,
    /// Offset of `data[0]` in this connection's byte stream, in this direction.
    pub seq: u64,
    /// Bytes the syscall transferred in all (its return value).
    pub call_len: u32,
    /// Payload bytes in `data` that are valid.
    pub len: u32,
    /// `direction::*`.
    pub direction: u8,
    pub pad: [u8; 7],
    pub data: [u8; DATA_CHUNK],
}

/// Size of a [`DataEvent`] without its payload: the record sent is this plus `len`.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::offset_of!(DataEvent, data);

/// A socket fd started being tracked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// `role::*`.
    pub role: u8,
    /// Address family of `addr` (`AF_INET`, `AF_INET6`, `AF_UNIX`, or 0 when unknown).
    pub family: u8,
    /// Peer port, host byte order.
    pub port: u16,
    /// 0 when the kernel saw the accept/connect; userspace sets [`OPEN_PREEXISTING`] on the
    /// events it synthesises for sockets found already open.
    pub origin: u8,
    pub pad: [u8; 3],
    /// Peer address: 4 bytes for IPv4, 16 for IPv6, network byte order.
    pub addr: [u8; 16],
    /// `comm` of the thread that accepted or connected.
    pub comm: [u8; 16],
}

/// A tracked socket fd was closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    pub header: EventHeader,
    /// Final stream offsets, indexed by `direction::*`: bytes after the last data event
    /// received are bytes that were lost.
    pub seq: [u64; 2],
}

/// A target process closed the fds `header.fd..=last` with `close_range(2)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseRangeEvent {
    pub header: EventHeader,
    /// Last fd of the range (inclusive).
    pub last: u32,
    pub pad: [u8; 4],
}

/// [`OpenEvent::origin`] of a socket found already open when capture started.
pub const OPEN_PREEXISTING: u8 = 1;

/// A target process forked or exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub header: EventHeader,
    /// The new process (fork) or the exiting one (exit).
    pub pid: u32,
    pub pad: [u8; 4],
}

/// Key of the socket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of the socket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    pub conn_id: u64,
    /// Bytes seen so far, indexed by `direction::*`.
    pub seq: [u64; 2],
    /// `role::*`.
    pub role: u8,
    /// `sock_flag::*`.
    pub flags: u8,
    pub pad: [u8; 6],
}

/// Value of the target map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetState {
    /// 1 when userspace selected the process, 2 when it was added on fork.
    pub origin: u32,
    /// `target_flag::*`.
    pub flags: u32,
}

/// Flags in [`TargetState::flags`].
pub mod target_flag {
    /// The process's children become targets as they are created (and inherit the flag).
    pub const FOLLOW: u32 = 1 << 0;
}

/// Connection ids assigned by userspace (for sockets already open at start) have this bit
/// set; the kernel's have it clear, so the two never collide.
pub const USER_CONN_ID_BIT: u64 = 1 << 63;

const _: () = assert!(size_of::<EventHeader>() == 32);
const _: () = assert!(DATA_EVENT_HEADER_LEN == 56);
const _: () = assert!(size_of::<OpenEvent>() == 72);
const _: () = assert!(size_of::<ProcEvent>() == 40);
const _: () = assert!(size_of::<CloseEvent>() == 48);
const _: () = assert!(size_of::<CloseRangeEvent>() == 40);
const _: () = assert!(size_of::<SockKey>() == 8);
const _: () = assert!(size_of::<SockState>() == 32);
const _: () = assert!(size_of::<TargetState>() == 8);
const _: () = assert!(DEFAULT_MAX_CAPTURE <= MAX_CAPTURE_LIMIT);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SockState {}
    unsafe impl aya::Pod for super::TargetState {}
}
