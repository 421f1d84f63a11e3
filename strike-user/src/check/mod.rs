//! `strike check`: whether this host (or this pod) can run Strike, item by item, each failing
//! item with its reason and its fix.
//!
//! The judgments are pure functions of what [`probe`] read, so each verdict and its message
//! is unit-tested without a kernel; [`probe::run`] does every read and is the only I/O here.
//! A failing item means `strike run` would not start (or would trace nothing it was asked
//! to); a warning means it starts but something the user may expect is missing.

pub mod probe;

use serde::Serialize;

use crate::capture::{
    privilege::{self, Cap, CapSet},
    MissingTracepoints, BTF, TRACEFS,
};

/// The oldest kernel Strike's programs load on: `bpf_loop` (5.17) bounds the copy loop.
pub const MIN_KERNEL: (u32, u32) = (5, 17);

/// One item's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not checked (not configured, or an earlier failure makes it meaningless).
    Skip,
}

impl Status {
    /// The word of the human output, padded by the caller.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One checked item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// A short stable name (`kernel`, `privileges`, `ebpf_load`...), for scripts.
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Item {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, None)
    }

    pub fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, detail, None)
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix.into()))
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.into()))
    }

    fn new(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// One GPU as NVML sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub power_w: Option<f64>,
    /// The device's energy counter since the driver loaded.
    pub energy_j: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub utilization_pct: Option<u32>,
    /// MIG mode: `None` where the device has none.
    pub mig_enabled: Option<bool>,
    pub processes: Vec<GpuProcess>,
}

/// A process using a GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
}

/// What NVML reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GpuFacts {
    pub driver_version: Option<String>,
    pub devices: Vec<GpuDevice>,
}

/// A process Strike would trace for the given selection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetProcess {
    pub pid: u32,
    pub comm: String,
    /// `/proc/PID/exe`, where readable. The command line is not shown: it can hold keys.
    pub exe: Option<String>,
    /// Socket fds open now.
    pub sockets: usize,
    /// TCP ports it listens on.
    pub listening: Vec<u16>,
    /// Its container, from its cgroup path.
    pub container_id: Option<String>,
    /// How its tokens are counted when a response carries no usage.
    pub tokenizer: String,
}

/// Everything `strike check` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// True when no item failed: Strike can run here as configured.
    pub ok: bool,
    pub version: &'static str,
    pub checks: Vec<Item>,
    /// Present when NVML loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuFacts>,
    /// Present when a selection (`--port`, `--pid`...) was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetProcess>>,
}

impl Report {
    pub fn new(
        checks: Vec<Item>,
        gpu: Option<GpuFacts>,
        targets: Option<Vec<TargetProcess>>,
    ) -> Self {
        Self {
            ok: !checks.iter().any(|c| c.status == Status::Fail),
            version: env!("CARGO_PKG_VERSION"),
            checks,
            gpu,
            targets,
        }
    }

    /// Items that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Item> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

/// `major.minor` of a kernel release string (`6.18.0-1-amd64`).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn judge_kernel(release: &str) -> Item {
    let (want_major, want_minor) = MIN_KERNEL;
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Item::ok(
            "kernel",
            format!("Linux {release} (Strike needs {want_major}.{want_minor} or later)"),
        ),
        Some(_) => Item::fail(
            "kernel",
            format!("Linux {release} is older than {want_major}.{want_minor}"),
            format!("run Strike on Linux {want_major}.{want_minor} or later: its programs bound their copy loop with bpf_loop (5.17) and send events through a ring buffer (5.8)"),
        ),
        None => Item::warn(
            "kernel",
            format!("cannot read the kernel version from {release:?}"),
            "check `uname -r`; Strike needs Linux 5.17 or later",
        ),
    }
}

pub fn judge_btf(present: bool) -> Item {
    if present {
        Item::ok("btf", format!("{BTF} present"))
    } else {
        Item::warn(
            "btf",
            format!("{BTF} is missing"),
            "Strike needs no BTF (its programs use no CO-RE relocations), but verifier messages are less precise without it; kernels built with CONFIG_DEBUG_INFO_BTF=y have it",
        )
    }
}

/// A kernel feature probe's outcome: `Err` when it could not be run (no `CAP_BPF`).
pub type Probed = Result<bool, String>;

pub fn judge_features(ringbuf: &Probed, bpf_loop: &Probed) -> Item {
    let word = |p: &Probed| match p {
        Ok(true) => "yes".to_owned(),
        Ok(false) => "NO".to_owned(),
        Err(e) => format!("unknown ({e})"),
    };
    let detail = format!(
        "ring buffer map: {}; bpf_loop helper from tracepoints: {}",
        word(ringbuf),
        word(bpf_loop)
    );
    match (ringbuf, bpf_loop) {
        (Ok(true), Ok(true)) => Item::ok("bpf_features", detail),
        (Ok(false), _) | (_, Ok(false)) => Item::fail(
            "bpf_features",
            detail,
            "the kernel lacks a feature Strike's programs use: run Linux 5.17 or later with CONFIG_BPF_SYSCALL=y",
        ),
        _ => Item::skip("bpf_features", detail),
    }
}

pub fn judge_privileges(uid: u32, caps: CapSet) -> Item {
    let held: Vec<&str> = [
        Cap::Bpf,
        Cap::Perfmon,
        Cap::DacReadSearch,
        Cap::DacOverride,
        Cap::SysPtrace,
        Cap::SysAdmin,
    ]
    .into_iter()
    .filter(|&c| caps.has(c))
    .map(Cap::name)
    .collect();
    let held = if held.is_empty() {
        "none of the capabilities capture needs".to_owned()
    } else {
        held.join(", ")
    };
    let detail = format!("uid {uid}; effective capabilities {:016x}: {held}", caps.0);
    let missing = privilege::missing(caps);
    if missing.is_empty() {
        Item::ok("privileges", detail)
    } else {
        Item::fail(
            "privileges",
            format!("{detail}; missing {}", privilege::describe(&missing)),
            format!(
                "run strike as root (`sudo strike ...`), or give it these capabilities: `sudo setcap {} \"$(command -v strike)\"`, or in Kubernetes `securityContext.capabilities.add: [{}]`",
                privilege::setcap_list(),
                privilege::kubernetes_list()
            ),
        )
    }
}

/// tracefs at [`TRACEFS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted, its syscall events readable.
    Ready,
    /// Mounted, but this process cannot read it (it is root-only: 0700).
    Unreadable,
    NotMounted,
}

/// tracefs as Strike needs it: mounted with its syscall events, or mountable by this process.
pub fn judge_tracefs(tracefs: Tracefs, caps: CapSet) -> Item {
    match tracefs {
        Tracefs::Ready => Item::ok("tracefs", format!("mounted at {TRACEFS}")),
        Tracefs::Unreadable => Item::fail(
            "tracefs",
            format!("mounted at {TRACEFS}, but this process cannot read it (root-only)"),
            "give strike CAP_DAC_READ_SEARCH (see privileges), or run it as root",
        ),
        Tracefs::NotMounted if caps.has(Cap::SysAdmin) => Item::warn(
            "tracefs",
            format!("not mounted at {TRACEFS}; strike mounts it when it starts (it holds CAP_SYS_ADMIN)"),
            format!("or mount it yourself: `mount -t tracefs tracefs {TRACEFS}`"),
        ),
        Tracefs::NotMounted => Item::fail(
            "tracefs",
            format!("not mounted at {TRACEFS}, and mounting it needs CAP_SYS_ADMIN"),
            format!("mount it on the host: `mount -t tracefs tracefs {TRACEFS}`; in a container, mount the host's {TRACEFS} read-only (Kubernetes: a hostPath volume)"),
        ),
    }
}

pub fn judge_tracepoints(missing: &MissingTracepoints, tracefs: Tracefs) -> Item {
    if tracefs != Tracefs::Ready {
        return Item::skip("tracepoints", "tracefs cannot be read");
    }
    let optional = if missing.optional.is_empty() {
        String::new()
    } else {
        format!(
            "; optional, not here: {} (skipped)",
            missing.optional.join(", ")
        )
    };
    if missing.required.is_empty() {
        Item::ok(
            "tracepoints",
            format!("{} tracepoints present{optional}", missing.present),
        )
    } else {
        Item::fail(
            "tracepoints",
            format!("missing: {}{optional}", missing.required.join(", ")),
            "Strike needs the syscall tracepoints (CONFIG_FTRACE_SYSCALLS=y) and the task/sched ones; if tracefs is mounted but empty, strike lacks CAP_DAC_READ_SEARCH to read it",
        )
    }
}

/// The outcome of loading and attaching the programs and detaching them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Load {
    /// `--no-load`.
    NotAsked,
    /// An earlier item failed that loading needs.
    Blocked(&'static str),
    /// (programs, tracepoints, milliseconds)
    Loaded(usize, usize, u64),
    /// The error and its causes, one line.
    Failed(String),
}

/// `seccomp`: this process's seccomp mode (`Seccomp:` of `/proc/self/status`, 2 = filter).
pub fn judge_load(load: &Load, seccomp: Option<u8>) -> Item {
    match load {
        Load::NotAsked => Item::skip("ebpf_load", "not tried (--no-load)"),
        Load::Blocked(why) => Item::skip("ebpf_load", format!("not tried: {why}")),
        Load::Loaded(programs, tracepoints, ms) => Item::ok(
            "ebpf_load",
            format!("{programs} programs loaded and attached to {tracepoints} tracepoints in {ms} ms, then detached"),
        ),
        // EPERM with the capabilities held (loading is only tried then) under a seccomp
        // filter: the container runtime's profile, not the kernel.
        Load::Failed(e) if seccomp == Some(2) && e.contains("Operation not permitted") => Item::fail(
            "ebpf_load",
            format!("{e} (with the capabilities held, under a seccomp filter)"),
            "the container runtime's seccomp profile blocks bpf(2) or perf_event_open(2): use one that allows them with CAP_BPF and CAP_PERFMON (the defaults of containerd 1.6.x and later and Docker 23 and later do; for podman, `cargo xtask image` writes target/image/seccomp.json: see deploy/container/README.md)",
        ),
        Load::Failed(e) => Item::fail(
            "ebpf_load",
            e.clone(),
            "run with STRIKE_LOG=debug for the verifier log; a kernel older than 5.17, a lockdown mode that forbids BPF, or a seccomp profile that blocks bpf(2) stop the programs from loading",
        ),
    }
}

/// The seccomp mode of a `/proc/PID/status` (0 none, 1 strict, 2 filter).
pub fn parse_seccomp(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The `NSpid:` line of `/proc/self/status`: this process's pid in each PID namespace it is
/// in, outermost first (a single entry: the host's namespace... or none at all before 4.1).
pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

pub fn judge_pid_namespace(nspid: Option<&[u32]>) -> Item {
    match nspid {
        Some([pid]) => Item::ok(
            "pid_namespace",
            format!("the host's PID namespace (pid {pid}): the kernel's pids are the /proc pids"),
        ),
        Some(levels) if levels.len() > 1 => Item::fail(
            "pid_namespace",
            format!(
                "in a nested PID namespace (pid {} here, {} outside): /proc shows only this container's processes, and the kernel reports host pids",
                levels[levels.len() - 1],
                levels[0]
            ),
            "share the host's PID namespace: Kubernetes `hostPID: true`, podman/docker `--pid host`",
        ),
        _ => Item::warn(
            "pid_namespace",
            "cannot tell (no NSpid line in /proc/self/status)",
            "make sure strike runs in the host's PID namespace (`hostPID: true`, `--pid host`)",
        ),
    }
}

/// The cgroup hierarchy at `/sys/fs/cgroup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cgroup {
    V2,
    /// v1 controllers with a v2 tree at `unified/`.
    Hybrid,
    V1,
    Absent,
}

pub fn judge_cgroup(cgroup: Cgroup) -> Item {
    match cgroup {
        Cgroup::V2 => Item::ok("cgroup", "cgroup v2 (unified)"),
        Cgroup::Hybrid => Item::ok("cgroup", "cgroup v1 with a v2 tree (hybrid): containers are found from /proc/PID/cgroup either way"),
        Cgroup::V1 => Item::ok("cgroup", "cgroup v1: containers are found from /proc/PID/cgroup"),
        Cgroup::Absent => Item::warn(
            "cgroup",
            "no cgroup filesystem at /sys/fs/cgroup",
            "records carry no container or pod ids without cgroups; mount the host's /sys/fs/cgroup read-only in a container",
        ),
    }
}

/// NVML's answer, with how GPU sampling was configured (`gpu.enabled`: null is auto).
pub fn judge_gpu(required: Option<bool>, facts: &Result<GpuFacts, String>) -> Item {
    match (required, facts) {
        (Some(false), _) => Item::skip("gpu", "GPU sampling is off (gpu.enabled: false)"),
        (_, Ok(facts)) => {
            let names: Vec<String> = facts
                .devices
                .iter()
                .map(|d| format!("{}: {}", d.index, d.name))
                .collect();
            let no_energy = facts.devices.iter().filter(|d| d.energy_j.is_none()).count();
            let detail = format!(
                "NVML driver {}, {} device(s) ({})",
                facts.driver_version.as_deref().unwrap_or("?"),
                facts.devices.len(),
                names.join(", ")
            );
            if no_energy > 0 {
                Item::warn(
                    "gpu",
                    format!("{detail}; {no_energy} without an energy counter"),
                    "energy is then integrated from power samples (pre-Volta GPUs have no counter); lower gpu.sample_interval_ms for a finer integral",
                )
            } else {
                Item::ok("gpu", detail)
            }
        }
        (Some(true), Err(e)) => Item::fail(
            "gpu",
            format!("GPU sampling is required (gpu.enabled: true) but {e}"),
            "install the NVIDIA driver (libnvidia-ml.so.1); in a container, run with the NVIDIA container runtime or mount the driver's libraries, or set gpu.enabled: auto",
        ),
        (None, Err(e)) => Item::skip(
            "gpu",
            format!("no GPU telemetry ({e}): requests are traced without GPU cost"),
        ),
    }
}

/// Whether the OTLP collector answered a TCP connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Disabled,
    Reached { endpoint: String, ms: u64 },
    Unreachable { endpoint: String, error: String },
    Invalid { endpoint: String, error: String },
}

pub fn judge_otlp(reach: &Reach) -> Item {
    match reach {
        Reach::Disabled => Item::skip("otlp", "OTLP export is off (otlp.enabled: false)"),
        Reach::Reached { endpoint, ms } => Item::ok(
            "otlp",
            format!("collector {endpoint} accepts connections ({ms} ms)"),
        ),
        Reach::Unreachable { endpoint, error } => Item::warn(
            "otlp",
            format!("collector {endpoint} does not answer: {error}"),
            "start the collector, or set otlp.endpoint / --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT; strike still runs, counts failed exports, and serves /metrics",
        ),
        Reach::Invalid { endpoint, error } => Item::fail(
            "otlp",
            format!("endpoint {endpoint:?} is not a URL strike can reach: {error}"),
            "set otlp.endpoint to http://HOST:4317 (gRPC) or http://HOST:4318 (HTTP)",
        ),
    }
}

/// What was found at the configured listen address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Disabled,
    Invalid(String),
    /// Free to bind.
    Free {
        addr: String,
        loopback: bool,
    },
    /// Already bound; `healthz` is the HTTP status its `/healthz` answered, if any.
    InUse {
        addr: String,
        healthz: Option<u16>,
    },
    CannotBind {
        addr: String,
        error: String,
    },
}

pub fn judge_listen(listen: &Listen) -> Item {
    match listen {
        Listen::Disabled => Item::skip("endpoint", "the HTTP endpoint is off (server.listen: none)"),
        Listen::Invalid(e) => Item::fail("endpoint", format!("server.listen is not an address: {e}"), "set server.listen to HOST:PORT, e.g. 127.0.0.1:9464, or none"),
        Listen::Free { addr, loopback: true } => Item::ok("endpoint", format!("{addr} is free (loopback only)")),
        Listen::Free { addr, loopback: false } => Item::ok(
            "endpoint",
            format!("{addr} is free; it is reachable beyond this host, so restrict it (the Kubernetes manifests add a NetworkPolicy)"),
        ),
        Listen::InUse { addr, healthz: Some(200) } => Item::ok("endpoint", format!("strike is already serving {addr}, and its /healthz answers 200")),
        Listen::InUse { addr, healthz: Some(code) } => Item::fail(
            "endpoint",
            format!("strike serves {addr}, but its /healthz answers {code}: its pipeline has stalled"),
            "see its /v1/status and logs; restart it if it does not recover",
        ),
        Listen::InUse { addr, healthz: None } => Item::fail(
            "endpoint",
            format!("{addr} is in use by a program that is not strike (no /healthz)"),
            "choose another address with --listen / server.listen",
        ),
        Listen::CannotBind { addr, error } => Item::fail(
            "endpoint",
            format!("cannot listen on {addr}: {error}"),
            "choose an address of this host with --listen / server.listen",
        ),
    }
}

/// The processes a selection matched. `dynamic` selections (ports, names, cgroups) wait for
/// their processes; a missing pid is an error of the command line.
pub fn judge_targets(selection: &str, dynamic: bool, found: &[TargetProcess]) -> Item {
    let pids: Vec<String> = found.iter().map(|t| t.pid.to_string()).collect();
    match (found.is_empty(), dynamic) {
        (false, _) => Item::ok(
            "targets",
            format!("{selection}: {} process(es): {}", found.len(), pids.join(", ")),
        ),
        (true, true) => Item::warn(
            "targets",
            format!("{selection}: no process matches now"),
            "strike run keeps looking and traces the server when it starts; check the port or name if it is already running",
        ),
        (true, false) => Item::fail(
            "targets",
            format!("{selection}: no such process"),
            "check the pid (`pgrep -a NAME`)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("5.17"), Some((5, 17)));
        assert_eq!(parse_release("5.4.0+"), Some((5, 4)));
        assert_eq!(parse_release("junk"), None);
        assert_eq!(judge_kernel("6.18.0").status, Status::Ok);
        assert_eq!(judge_kernel("5.17.1").status, Status::Ok);
        let old = judge_kernel("5.15.0-91-generic");
        assert_eq!(old.status, Status::Fail);
        assert!(old.fix.unwrap().contains("5.17"));
        assert_eq!(judge_kernel("?").status, Status::Warn);
    }

    #[test]
    fn privileges_name_what_is_missing_and_the_fix() {
        let none = judge_privileges(65534, CapSet(0));
        assert_eq!(none.status, Status::Fail);
        assert!(none.detail.starts_with("uid 65534"), "{}", none.detail);
        assert!(none.detail.contains("missing CAP_BPF"), "{}", none.detail);
        let fix = none.fix.unwrap();
        assert!(fix.contains("setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace+ep"));
        assert!(fix.contains("BPF, PERFMON, DAC_READ_SEARCH, SYS_PTRACE"));

        let four =
            CapSet::default().with(&[Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch, Cap::SysPtrace]);
        let item = judge_privileges(65534, four);
        assert_eq!(item.status, Status::Ok);
        assert!(
            item.detail
                .ends_with("CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE"),
            "{}",
            item.detail
        );
        assert_eq!(
            judge_privileges(0, CapSet(0x1ff_ffff_ffff)).status,
            Status::Ok
        );
    }

    #[test]
    fn tracefs_unmounted_fails_only_without_sys_admin_and_unreadable_fails() {
        assert_eq!(judge_tracefs(Tracefs::Ready, CapSet(0)).status, Status::Ok);
        assert_eq!(
            judge_tracefs(Tracefs::NotMounted, CapSet(0x1ff_ffff_ffff)).status,
            Status::Warn
        );
        let unreadable = judge_tracefs(Tracefs::Unreadable, CapSet(0));
        assert_eq!(unreadable.status, Status::Fail);
        assert!(unreadable.fix.unwrap().contains("CAP_DAC_READ_SEARCH"));
        let item = judge_tracefs(
            Tracefs::NotMounted,
            CapSet::default().with(&[Cap::Bpf, Cap::Perfmon]),
        );
        assert_eq!(item.status, Status::Fail);
        assert!(item
            .fix
            .unwrap()
            .contains("mount -t tracefs tracefs /sys/kernel/tracing"));
    }

    #[test]
    fn tracepoints_required_and_optional() {
        let all = MissingTracepoints {
            present: 30,
            required: vec![],
            optional: vec!["syscalls/sys_enter_dup2".into()],
        };
        let item = judge_tracepoints(&all, Tracefs::Ready);
        assert_eq!(item.status, Status::Ok);
        assert!(item
            .detail
            .contains("optional, not here: syscalls/sys_enter_dup2"));
        let some = MissingTracepoints {
            present: 2,
            required: vec!["syscalls/sys_enter_read".into()],
            optional: vec![],
        };
        assert_eq!(
            judge_tracepoints(&some, Tracefs::Ready).status,
            Status::Fail
        );
        assert_eq!(
            judge_tracepoints(&some, Tracefs::NotMounted).status,
            Status::Skip
        );
    }

    #[test]
    fn features_fail_only_when_known_absent() {
        assert_eq!(judge_features(&Ok(true), &Ok(true)).status, Status::Ok);
        assert_eq!(judge_features(&Ok(true), &Ok(false)).status, Status::Fail);
        let unknown = judge_features(&Err("EPERM".into()), &Ok(true));
        assert_eq!(unknown.status, Status::Skip);
        assert!(unknown.detail.contains("unknown (EPERM)"));
    }

    #[test]
    fn pid_namespaces() {
        let host = "Name:\tstrike\nNSpid:\t4242\n";
        assert_eq!(parse_nspid(host), Some(vec![4242]));
        assert_eq!(judge_pid_namespace(Some(&[4242])).status, Status::Ok);
        let nested = parse_nspid("NSpid:\t91234\t7\n").unwrap();
        let item = judge_pid_namespace(Some(&nested));
        assert_eq!(item.status, Status::Fail);
        assert!(
            item.detail.contains("pid 7 here, 91234 outside"),
            "{}",
            item.detail
        );
        assert!(item.fix.unwrap().contains("hostPID: true"));
        assert_eq!(
            judge_pid_namespace(parse_nspid("Name:\tx\n").as_deref()).status,
            Status::Warn
        );
    }

    fn device(energy: Option<f64>) -> GpuDevice {
        GpuDevice {
            index: 0,
            name: "NVIDIA H200".into(),
            uuid: "GPU-1".into(),
            power_w: Some(70.0),
            energy_j: energy,
            memory_used_bytes: Some(1),
            memory_total_bytes: Some(2),
            utilization_pct: Some(0),
            mig_enabled: None,
            processes: vec![],
        }
    }

    #[test]
    fn gpu_by_mode() {
        let facts = Ok(GpuFacts {
            driver_version: Some("570.1".into()),
            devices: vec![device(Some(1.0))],
        });
        let item = judge_gpu(None, &facts);
        assert_eq!(item.status, Status::Ok);
        assert_eq!(
            item.detail,
            "NVML driver 570.1, 1 device(s) (0: NVIDIA H200)"
        );
        let old = Ok(GpuFacts {
            driver_version: None,
            devices: vec![device(None)],
        });
        assert_eq!(judge_gpu(None, &old).status, Status::Warn);
        let absent: Result<GpuFacts, String> = Err("NVML is not installed".into());
        assert_eq!(judge_gpu(None, &absent).status, Status::Skip);
        assert_eq!(judge_gpu(Some(true), &absent).status, Status::Fail);
        assert_eq!(judge_gpu(Some(false), &facts).status, Status::Skip);
    }

    #[test]
    fn endpoint_in_use_by_strike_is_healthy_or_not() {
        let addr = "127.0.0.1:9464".to_owned();
        let ok = judge_listen(&Listen::InUse {
            addr: addr.clone(),
            healthz: Some(200),
        });
        assert_eq!(ok.status, Status::Ok);
        let stalled = judge_listen(&Listen::InUse {
            addr: addr.clone(),
            healthz: Some(503),
        });
        assert_eq!(stalled.status, Status::Fail);
        assert_eq!(
            judge_listen(&Listen::InUse {
                addr,
                healthz: None
            })
            .status,
            Status::Fail
        );
        let open = judge_listen(&Listen::Free {
            addr: "0.0.0.0:9464".into(),
            loopback: false,
        });
        assert!(open.detail.contains("NetworkPolicy"));
    }

    #[test]
    fn otlp_unreachable_is_a_warning() {
        let item = judge_otlp(&Reach::Unreachable {
            endpoint: "http://127.0.0.1:4317".into(),
            error: "connection refused".into(),
        });
        assert_eq!(item.status, Status::Warn);
        assert_eq!(judge_otlp(&Reach::Disabled).status, Status::Skip);
    }

    #[test]
    fn targets_dynamic_wait_pids_fail() {
        assert_eq!(judge_targets("--port 8000", true, &[]).status, Status::Warn);
        assert_eq!(judge_targets("--pid 1", false, &[]).status, Status::Fail);
        let t = TargetProcess {
            pid: 7,
            comm: "python3".into(),
            exe: None,
            sockets: 1,
            listening: vec![8000],
            container_id: None,
            tokenizer: "estimate".into(),
        };
        assert_eq!(
            judge_targets("--port 8000", true, &[t]).detail,
            "--port 8000: 1 process(es): 7"
        );
    }

    #[test]
    fn a_report_is_ok_without_failures() {
        let report = Report::new(
            vec![
                Item::ok("kernel", "6.18"),
                Item::warn("otlp", "down", "start it"),
            ],
            None,
            None,
        );
        assert!(report.ok);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][1]["status"], "warn");
        assert_eq!(json["checks"][1]["fix"], "start it");
        assert!(json.get("gpu").is_none());
        let bad = Report::new(vec![Item::fail("kernel", "old", "upgrade")], None, None);
        assert!(!bad.ok);
        assert_eq!(bad.failures().count(), 1);
    }

    #[test]
    fn eperm_under_a_seccomp_filter_names_the_runtime_profile() {
        let status = "Name:\tstrike\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_seccomp(status), Some(2));
        assert_eq!(parse_seccomp("Name:\tx\n"), None);
        let failed = Load::Failed(
            "map error: failed to create map `COPY`: Operation not permitted (os error 1)".into(),
        );
        let item = judge_load(&failed, Some(2));
        assert_eq!(item.status, Status::Fail);
        assert!(item
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("seccomp profile blocks bpf(2)")));
        // Without a filter, or another error: the general advice.
        for (load, mode) in [
            (&failed, Some(0)),
            (&Load::Failed("verifier: invalid".into()), Some(2)),
        ] {
            let item = judge_load(load, mode);
            assert!(item
                .fix
                .as_deref()
                .is_some_and(|f| f.starts_with("run with STRIKE_LOG=debug")));
        }
    }
}
