//! Strike's kernel programs.
//!
//! Syscall tracepoints capture the bytes a target process moves on its sockets:
//! - enter probes check the target filter (tgid, then the socket fd) and stash the syscall's
//!   arguments per thread; nothing else happens for non-target processes;
//! - exit probes read the return value and copy exactly the bytes transferred, in chunks of
//!   at most `DATA_CHUNK`, up to the per-syscall capture cap, into one ring buffer;
//! - accept/connect/close maintain the socket map and its session-unique connection ids;
//! - `close_range`, `dup2`/`dup3` over a socket, and `execve` end sockets the way `close`
//!   does, or tell userspace to check which ended;
//! - `task_newtask` (processes, not threads) and `sched_process_exit` follow the target's
//!   child processes.
//!
//! Control events (open, close, fork, exit, exec, close_range) have a share of the ring
//! buffer that data events may not fill (`CONTROL_RESERVE_BYTES`), so a reader that falls
//! behind loses data, counted and seen as gaps, but not the events that say which
//! connections and processes exist.
//!
//! Every drop is counted in `COUNTERS`; every byte has a stream offset (`seq`), so userspace
//! sees any byte that was not delivered as a gap.
#![no_std]
#![no_main]

use core::ptr;

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_loop,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use strike_common::{
    counter, direction, flag, kind, role, sock_flag, target_flag, CloseEvent, CloseRangeEvent,
    DataEvent, EventHeader, OpenEvent, ProcEvent, SockKey, SockState, TargetState, DATA_CHUNK,
    DATA_EVENT_HEADER_LEN, DEFAULT_MAX_CAPTURE, MAX_CAPTURE_LIMIT, MAX_CHUNKS, MAX_IOV_SEGMENTS,
};

// Map names are the `strike_common::MAP_*` constants; userspace looks them up by name.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map(name = "TARGETS")]
static TARGETS: HashMap<u32, TargetState> = HashMap::with_max_entries(4096, 0);

#[map(name = "SOCKS")]
static SOCKS: HashMap<SockKey, SockState> = HashMap::with_max_entries(65536, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Arguments of an in-flight syscall, keyed by pid_tgid (one per thread).
#[map(name = "PENDING")]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// One `DataEvent` per CPU: too large for the 512-byte BPF stack.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// State of the running copy loop (see `copy_step`).
#[map(name = "COPY")]
static COPY: PerCpuArray<Copy> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU connection counter: `conn_id = cpu << 40 | count`.
#[map(name = "CONN_SEQ")]
static CONN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Bytes captured from one syscall at most; userspace overrides it (`GLOBAL_MAX_CAPTURE`).
#[no_mangle]
static MAX_CAPTURE_BYTES: u32 = DEFAULT_MAX_CAPTURE;
/// Offsets of `pid` and `clone_flags` in `task/task_newtask`, which userspace reads from
/// the format file.
#[no_mangle]
static NEWTASK_PID_OFF: u32 = 8;
#[no_mangle]
static NEWTASK_FLAGS_OFF: u32 = 32;
/// Ring buffer bytes that data events leave free for control events; userspace sets it
/// from the ring's size.
#[no_mangle]
static CONTROL_RESERVE_BYTES: u64 = 1024 * 1024;

const OP_BUF: u8 = 1;
const OP_IOV: u8 = 2;
const OP_ACCEPT: u8 = 3;
const OP_CONNECT: u8 = 4;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
/// Ring buffer record header (`BPF_RINGBUF_HDR_SZ`); records are rounded up to 8 bytes.
const RINGBUF_HDR: u64 = 8;
/// Bytes waiting in the ring buffer before the reader is woken up.
const WAKEUP_BYTES: u64 = 256 * 1024;

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;
/// `CLONE_THREAD`: the new task is a thread of the caller, not a process.
const CLONE_THREAD: u64 = 0x0001_0000;
/// `CLOSE_RANGE_CLOEXEC`: the range is only marked close-on-exec (closed at `execve`).
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

/// Offsets in `/sys/kernel/tracing/events/syscalls/*/format`: the first argument is at 16,
/// each argument takes 8 bytes; `ret` of `sys_exit_*` is at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// Buffer, iovec array, or sockaddr pointer.
    ptr: u64,
    /// Buffer size or iovec count.
    count: u64,
    fd: u32,
    op: u8,
    dir: u8,
    pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

#[inline(always)]
fn count(index: u32, value: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += value };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { TARGETS.get(tgid) }.is_some()
}

#[inline(always)]
fn read_max_capture() -> u64 {
    // SAFETY: a global set by the loader before the program runs.
    let cap = unsafe { ptr::read_volatile(&MAX_CAPTURE_BYTES) };
    u64::from(if cap > MAX_CAPTURE_LIMIT {
        MAX_CAPTURE_LIMIT
    } else {
        cap
    })
}

// ---------------------------------------------------------------------------------------
// Data syscalls

/// Stash a data syscall's arguments when its fd is a tracked socket of a target.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, op: u8, dir: u8, msg: bool) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    // SAFETY: offsets from the tracepoint format (see ARG0..ARG2).
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    // SAFETY: the flags are copied out at once.
    let Some(flags) = (unsafe { SOCKS.get(SockKey { tgid, fd }) }).map(|s| s.flags) else {
        return Ok(0);
    };
    if flags & sock_flag::IGNORE != 0 {
        count(counter::IGNORED_CALLS, 1);
        return Ok(0);
    }
    let ptr = unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|_| 1u32)?;
    let (ptr, count_arg) = if msg {
        // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
        // SAFETY: reads user memory through the checked helper.
        let iov = unsafe { bpf_probe_read_user((ptr + 16) as *const u64) }.map_err(|_| 1u32)?;
        let iovlen = unsafe { bpf_probe_read_user((ptr + 24) as *const u64) }.map_err(|_| 1u32)?;
        (iov, iovlen)
    } else {
        (ptr, unsafe { ctx.read_at::<u64>(ARG2) }.map_err(|_| 1u32)?)
    };
    let pending = Pending {
        ptr,
        count: count_arg,
        fd,
        op,
        dir,
        pad: [0; 2],
    };
    if PENDING.insert(pid_tgid, pending, 0).is_err() {
        count(counter::PENDING_FULL, 1);
    }
    Ok(0)
}

/// Copy the bytes a data syscall transferred into the ring buffer.
#[inline(always)]
fn exit_data(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(pid_tgid) }).copied() else {
        return Ok(0);
    };
    let _ = PENDING.remove(pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    let ret = unsafe { ctx.read_at::<i64>(RET) }.map_err(|_| 1u32)?;
    let key = SockKey {
        tgid,
        fd: pending.fd,
    };
    let Some(sock) = SOCKS.get_ptr_mut(key) else {
        return Ok(0);
    };
    let dir = pending.dir as usize & 1;
    // SAFETY: map value pointer, valid for this program run.
    let (conn_id, seq) = unsafe { ((*sock).conn_id, (*sock).seq[dir]) };
    if ret == 0 && pending.dir == direction::INGRESS {
        // End of stream: the peer shut down its side. Sent as an empty data event.
        emit_data(pid_tgid, &pending, conn_id, seq, 0, 0, 0, 0);
        return Ok(0);
    }
    if ret <= 0 {
        return Ok(0);
    }
    let ret = ret as u64;
    // SAFETY: as above; racing writers on one socket only skew seq, which userspace reports.
    unsafe { (*sock).seq[dir] = seq + ret };
    let max = read_max_capture();
    let cap = if ret < max { ret } else { max };
    let Some(state) = COPY.get_ptr_mut(0) else {
        return Ok(0);
    };
    let copy = Copy {
        pending,
        pid_tgid,
        conn_id,
        seq,
        ret,
        cap,
        done: 0,
        seg: 0,
        base: 0,
        seg_len: 0,
        seg_off: 0,
    };
    // SAFETY: per-CPU slot; tracepoint programs do not nest on one CPU.
    unsafe { *state = copy };
    // bpf_loop: the verifier checks the step once, whatever the number of iterations. The
    // loop state lives in a map value rather than on the stack: the verifier does not track
    // map memory, so the steps' states converge instead of differing by their offsets.
    // SAFETY: the callback is a BPF subprogram; it takes no context pointer.
    unsafe {
        bpf_loop(
            MAX_CHUNKS + MAX_IOV_SEGMENTS,
            copy_step as *const () as *mut c_void,
            ptr::null_mut(),
            0,
        )
    };
    let done = unsafe { (*state).done };
    if done < ret {
        count(counter::TRUNCATED_CALLS, 1);
        count(counter::TRUNCATED_BYTES, ret - done);
    }
    Ok(0)
}

/// State of one syscall's copy loop, on the exit probe's stack.
#[repr(C)]
#[derive(Clone, Copy)]
struct Copy {
    pending: Pending,
    pid_tgid: u64,
    conn_id: u64,
    /// Stream offset of the syscall's first byte.
    seq: u64,
    /// Bytes the syscall transferred.
    ret: u64,
    /// Bytes to capture: `min(ret, MAX_CAPTURE_BYTES)`.
    cap: u64,
    /// Bytes sent so far.
    done: u64,
    /// Next iovec index (for a plain buffer, 1 once its single segment is set up).
    seg: u64,
    base: u64,
    seg_len: u64,
    seg_off: u64,
}

/// One step of the copy loop: moves to the next iovec segment, or sends one chunk of at most
/// `DATA_CHUNK` bytes. Returns 1 to stop the loop.
#[inline(never)]
unsafe extern "C" fn copy_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(c) = COPY.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU slot that exit_data filled before starting the loop.
    let c = unsafe { &mut *c };
    if c.done >= c.cap {
        return 1;
    }
    if c.seg_off >= c.seg_len {
        if c.pending.op != OP_IOV {
            if c.seg > 0 {
                return 1;
            }
            c.base = c.pending.ptr;
            c.seg_len = c.cap;
        } else {
            if c.seg >= c.pending.count || c.seg >= u64::from(MAX_IOV_SEGMENTS) {
                return 1;
            }
            let at = c.pending.ptr + c.seg * core::mem::size_of::<Iovec>() as u64;
            // SAFETY: reads user memory through the checked helper.
            let Ok(iov) = (unsafe { bpf_probe_read_user(at as *const Iovec) }) else {
                count(counter::READ_FAULTS, 1);
                return 1;
            };
            c.base = iov.base;
            c.seg_len = iov.len;
        }
        c.seg += 1;
        c.seg_off = 0;
        return 0;
    }
    let mut len = c.seg_len - c.seg_off;
    if len > c.cap - c.done {
        len = c.cap - c.done;
    }
    if len > DATA_CHUNK as u64 {
        len = DATA_CHUNK as u64;
    }
    let last = c.done + len >= c.cap;
    let flags = if last && c.cap < c.ret {
        flag::TRUNCATED
    } else {
        0
    };
    let pending = c.pending;
    emit_data(
        c.pid_tgid,
        &pending,
        c.conn_id,
        c.seq + c.done,
        c.ret,
        c.base + c.seg_off,
        len,
        flags,
    );
    c.seg_off += len;
    c.done += len;
    0
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "flat arguments keep the verifier's view simple"
)]
fn emit_data(
    pid_tgid: u64,
    p: &Pending,
    conn_id: u64,
    seq: u64,
    call_len: u64,
    src: u64,
    len: u64,
    flags: u8,
) {
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot; no other program runs on this CPU meanwhile.
    let ev = unsafe { &mut *ev };
    ev.header = EventHeader {
        flags,
        ..header(kind::DATA, pid_tgid, p.fd, conn_id)
    };
    ev.seq = seq;
    ev.call_len = call_len as u32;
    ev.direction = p.dir;
    let n = len as usize;
    if n > DATA_CHUNK {
        return;
    }
    if n > 0 {
        // SAFETY: `n <= DATA_CHUNK` bounds the destination; the source is user memory.
        if unsafe { bpf_probe_read_user_buf(src as *const u8, &mut ev.data[..n]) }.is_err() {
            count(counter::READ_FAULTS, 1);
            return;
        }
    }
    ev.len = n as u32;
    // SAFETY: the first DATA_EVENT_HEADER_LEN + n bytes of the scratch event are initialised.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (ev as *const DataEvent).cast::<u8>(),
            DATA_EVENT_HEADER_LEN + n,
        )
    };
    let Some(wakeup) = data_room(bytes.len() as u64) else {
        count(counter::RINGBUF_FULL, 1);
        return;
    };
    if EVENTS.output::<[u8]>(bytes, wakeup).is_ok() {
        count(counter::EVENTS, 1);
        count(counter::BYTES, len);
    } else {
        count(counter::RINGBUF_FULL, 1);
    }
}

/// The wakeup flags for a data record of `len` bytes, or `None` when it would eat into the
/// space reserved for control events. CPUs race for the last free bytes, so the reserve
/// is kept approximately, which is all it needs.
#[inline(always)]
fn data_room(len: u64) -> Option<u64> {
    let used = EVENTS.query(BPF_RB_AVAIL_DATA);
    let size = EVENTS.query(BPF_RB_RING_SIZE);
    // SAFETY: a global set by the loader before the program runs.
    let reserve = unsafe { ptr::read_volatile(&CONTROL_RESERVE_BYTES) };
    let need = used + reserve + RINGBUF_HDR + ((len + 7) & !7);
    if need > size {
        return None;
    }
    Some(if used >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    })
}

/// A tracepoint program in the thin form: `$body(&ctx, args…)` (`Result<u32, u32>`) does
/// the work, and either outcome is the program's return code. Each gets a doc line naming
/// the tracepoint format it reads. A direct call, so the verifier sees no indirect jump.
macro_rules! probe {
    ($(#[$doc:meta])* $name:ident => $body:ident $(($($arg:expr),*))?) => {
        $(#[$doc])*
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            match $body(&ctx $($(, $arg)*)?) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

/// The entry and exit programs of the data syscalls: `name: op, direction, msghdr;`.
macro_rules! data_probes {
    ($($syscall:literal: $enter:ident, $exit:ident, $op:expr, $dir:expr, $msg:expr;)*) => {$(
        probe!(
            #[doc = concat!(
                "`syscalls/sys_enter_", $syscall,
                "`: fd at 16, buffer/iovec/msghdr at 24, count at 32."
            )]
            $enter => enter_data($op, $dir, $msg)
        );
        probe!(
            #[doc = concat!("`syscalls/sys_exit_", $syscall, "`: ret at 16.")]
            $exit => exit_data
        );
    )*};
}

data_probes! {
    "read": enter_read, exit_read, OP_BUF, direction::INGRESS, false;
    "write": enter_write, exit_write, OP_BUF, direction::EGRESS, false;
    "recvfrom": enter_recvfrom, exit_recvfrom, OP_BUF, direction::INGRESS, false;
    "sendto": enter_sendto, exit_sendto, OP_BUF, direction::EGRESS, false;
    "readv": enter_readv, exit_readv, OP_IOV, direction::INGRESS, false;
    "writev": enter_writev, exit_writev, OP_IOV, direction::EGRESS, false;
    "recvmsg": enter_recvmsg, exit_recvmsg, OP_IOV, direction::INGRESS, true;
    "sendmsg": enter_sendmsg, exit_sendmsg, OP_IOV, direction::EGRESS, true;
}

// ---------------------------------------------------------------------------------------
// Socket lifetime

probe!(
    /// `syscalls/sys_enter_accept` and `sys_enter_accept4`: upeer_sockaddr at 24.
    enter_accept => try_enter_sock(OP_ACCEPT)
);
probe!(
    /// `syscalls/sys_enter_connect`: fd at 16, uservaddr at 24.
    enter_connect => try_enter_sock(OP_CONNECT)
);

fn try_enter_sock(ctx: &TracePointContext, op: u8) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return Ok(0);
    }
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    let addr = unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|_| 1u32)?;
    let pending = Pending {
        ptr: addr,
        count: 0,
        fd,
        op,
        dir: 0,
        pad: [0; 2],
    };
    if PENDING.insert(pid_tgid, pending, 0).is_err() {
        count(counter::PENDING_FULL, 1);
    }
    Ok(0)
}

probe!(
    /// `syscalls/sys_exit_accept` and `sys_exit_accept4`: ret at 16.
    exit_accept => try_exit_sock(OP_ACCEPT)
);
probe!(
    /// `syscalls/sys_exit_connect`: ret at 16.
    exit_connect => try_exit_sock(OP_CONNECT)
);

fn try_exit_sock(ctx: &TracePointContext, op: u8) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pending = unsafe { PENDING.get(pid_tgid) }.copied();
    if pending.is_some() {
        let _ = PENDING.remove(pid_tgid);
    }
    let ret = unsafe { ctx.read_at::<i64>(RET) }.map_err(|_| 1u32)?;
    let (fd, sock_role, addr) = match (op, pending) {
        (OP_ACCEPT, Some(p)) if p.op == OP_ACCEPT && ret >= 0 => (ret as u32, role::SERVER, p.ptr),
        // An accept that was already blocked when Strike attached has no enter record: the
        // connection is still the target's, only its peer address is unknown.
        (OP_ACCEPT, None) if ret >= 0 && is_target(tgid) => (ret as u32, role::SERVER, 0),
        (OP_CONNECT, Some(p)) if p.op == OP_CONNECT && (ret == 0 || ret == -EINPROGRESS) => {
            (p.fd, role::CLIENT, p.ptr)
        }
        _ => return Ok(0),
    };
    let mut open = OpenEvent {
        role: sock_role,
        ..OpenEvent::default()
    };
    if addr != 0 {
        read_sockaddr(addr, &mut open);
    }
    // Outgoing connections only matter over IP; unix-socket connects are logging, DNS, etc.
    if sock_role == role::CLIENT && open.family != AF_INET as u8 && open.family != AF_INET6 as u8 {
        return Ok(0);
    }
    let conn_id = next_conn_id();
    let state = SockState {
        conn_id,
        seq: [0; 2],
        role: sock_role,
        flags: 0,
        pad: [0; 6],
    };
    if SOCKS.insert(SockKey { tgid, fd }, state, 0).is_err() {
        count(counter::SOCKS_FULL, 1);
        return Ok(0);
    }
    open.header = header(kind::OPEN, pid_tgid, fd, conn_id);
    open.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    output(&open);
    Ok(0)
}

fn read_sockaddr(at: u64, open: &mut OpenEvent) {
    // SAFETY: user memory through the checked helper.
    let Ok(family) = (unsafe { bpf_probe_read_user(at as *const u16) }) else {
        return;
    };
    match family {
        AF_INET => {
            let port = unsafe { bpf_probe_read_user((at + 2) as *const u16) }.unwrap_or(0);
            let addr = unsafe { bpf_probe_read_user((at + 4) as *const [u8; 4]) }.unwrap_or([0; 4]);
            open.family = AF_INET as u8;
            open.port = u16::from_be(port);
            open.addr[..4].copy_from_slice(&addr);
        }
        AF_INET6 => {
            let port = unsafe { bpf_probe_read_user((at + 2) as *const u16) }.unwrap_or(0);
            let addr =
                unsafe { bpf_probe_read_user((at + 8) as *const [u8; 16]) }.unwrap_or([0; 16]);
            open.family = AF_INET6 as u8;
            open.port = u16::from_be(port);
            open.addr = addr;
        }
        AF_UNIX => open.family = AF_UNIX as u8,
        _ => {}
    }
}

fn next_conn_id() -> u64 {
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    let n = match CONN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    };
    (cpu << 40) | (n & ((1 << 40) - 1))
}

probe!(
    /// `syscalls/sys_enter_close`: fd at 16.
    enter_close => try_enter_close
);

fn try_enter_close(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    close_sock(pid_tgid, fd);
    Ok(0)
}

/// Ends the tracking of `fd` of the current process, if it is a tracked socket.
#[inline(always)]
fn close_sock(pid_tgid: u64, fd: u32) {
    let tgid = (pid_tgid >> 32) as u32;
    let key = SockKey { tgid, fd };
    let Some(state) = (unsafe { SOCKS.get(key) }).copied() else {
        return;
    };
    let _ = SOCKS.remove(key);
    let close = CloseEvent {
        header: header(kind::CLOSE, pid_tgid, fd, state.conn_id),
        seq: state.seq,
    };
    output(&close);
}

probe!(
    /// `syscalls/sys_enter_dup2` and `sys_enter_dup3`: oldfd at 16, newfd at 24. A tracked
    /// socket at `newfd` is closed by the call; a copy of one is counted, not followed.
    enter_dup2 => try_enter_dup2
);

fn try_enter_dup2(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let old = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    let new = unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|_| 1u32)? as u32;
    if old == new {
        return Ok(0);
    }
    count_alias(tgid, old);
    close_sock(pid_tgid, new);
    Ok(0)
}

probe!(
    /// `syscalls/sys_enter_dup`: fildes at 16. A copy of a tracked socket is counted.
    enter_dup => try_enter_dup
);

fn try_enter_dup(ctx: &TracePointContext) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let fd = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    count_alias(tgid, fd);
    Ok(0)
}

#[inline(always)]
fn count_alias(tgid: u32, fd: u32) {
    // SAFETY: presence test only.
    if unsafe { SOCKS.get(SockKey { tgid, fd }) }.is_some() {
        count(counter::DUP_ALIASES, 1);
    }
}

probe!(
    /// `syscalls/sys_enter_close_range`: fd at 16, max_fd at 24, flags at 32. Userspace
    /// knows the process's sockets and ends those in the range; a range that is only marked
    /// close-on-exec ends at `execve`.
    enter_close_range => try_enter_close_range
);

fn try_enter_close_range(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let first = unsafe { ctx.read_at::<u64>(ARG0) }.map_err(|_| 1u32)? as u32;
    let last = unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|_| 1u32)? as u32;
    let flags = unsafe { ctx.read_at::<u64>(ARG2) }.map_err(|_| 1u32)?;
    // A range only marked close-on-exec ends at `execve`; a reversed one is EINVAL.
    if flags & CLOSE_RANGE_CLOEXEC != 0 || last < first {
        return Ok(0);
    }
    let ev = CloseRangeEvent {
        header: header(kind::CLOSE_RANGE, pid_tgid, first, 0),
        last,
        pad: [0; 4],
    };
    output(&ev);
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// Process tree

probe!(
    /// `task/task_newtask`: pid and clone_flags at the offsets userspace read from the
    /// format file; runs in the parent before the child can run. A child process of a
    /// target becomes a target at once (no race with its first accept); a thread shares
    /// its process's tgid and needs nothing.
    task_newtask => try_newtask
);

fn try_newtask(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the flags are copied out at once.
    let Some(flags) = (unsafe { TARGETS.get(tgid) }).map(|t| t.flags) else {
        return Ok(0);
    };
    // `--no-follow`: the target's children are not traced.
    if flags & target_flag::FOLLOW == 0 {
        return Ok(0);
    }
    let flags_off = unsafe { ptr::read_volatile(&NEWTASK_FLAGS_OFF) } as usize;
    let clone_flags = unsafe { ctx.read_at::<u64>(flags_off) }.map_err(|_| 1u32)?;
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(0);
    }
    let pid_off = unsafe { ptr::read_volatile(&NEWTASK_PID_OFF) } as usize;
    let child = unsafe { ctx.read_at::<u32>(pid_off) }.map_err(|_| 1u32)?;
    let state = TargetState {
        origin: 2,
        flags: target_flag::FOLLOW,
    };
    if TARGETS.insert(child, state, 0).is_err() {
        count(counter::TARGETS_FULL, 1);
        return Ok(0);
    }
    let ev = ProcEvent {
        header: header(kind::FORK, pid_tgid, 0, 0),
        pid: child,
        pad: [0; 4],
    };
    output(&ev);
    Ok(0)
}

probe!(
    /// `sched/sched_process_exit`: runs in the exiting task; a target's leader exiting ends
    /// it (the format's fields are not needed).
    sched_exit => try_sched_exit
);

fn try_sched_exit(_ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 || !is_target(tgid) {
        return Ok(0);
    }
    let _ = TARGETS.remove(tgid);
    let ev = ProcEvent {
        header: header(kind::EXIT, pid_tgid, 0, 0),
        pid: tgid,
        pad: [0; 4],
    };
    output(&ev);
    Ok(0)
}

probe!(
    /// `sched/sched_process_exec`: runs in the process after a successful `execve`; its
    /// close-on-exec sockets are closed, which userspace finds out from `/proc`.
    sched_exec => try_sched_exec
);

fn try_sched_exec(_ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let ev = ProcEvent {
        header: header(kind::EXEC, pid_tgid, 0, 0),
        pid: tgid,
        pad: [0; 4],
    };
    output(&ev);
    Ok(0)
}

/// Wake the reader only once enough is waiting: a wakeup per record (the default when the
/// reader keeps up) costs more than the copy itself. The reader also drains on a short timer.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// The header of a record of the current thread's.
#[inline(always)]
fn header(kind: u8, pid_tgid: u64, fd: u32, conn_id: u64) -> EventHeader {
    EventHeader {
        kind,
        flags: 0,
        pad: [0; 2],
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id,
    }
}

/// A control event: it may use the space data events leave free.
#[inline(always)]
fn output<T>(value: &T) {
    if EVENTS.output::<T>(value, wakeup_flags()).is_ok() {
        count(counter::EVENTS, 1);
    } else {
        count(counter::CONTROL_LOST, 1);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
