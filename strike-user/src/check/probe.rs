//! The reads behind `strike check`: the kernel, `/proc`, tracefs, the bpf(2) feature probes,
//! one real load of the programs, NVML, and the network endpoints. Every verdict is the
//! parent module's.

use std::{
    error::Error as _,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};

use super::{
    judge_btf, judge_cgroup, judge_features, judge_gpu, judge_kernel, judge_listen, judge_load,
    judge_otlp, judge_pid_namespace, judge_privileges, judge_targets, judge_tracefs,
    judge_tracepoints, parse_nspid, parse_seccomp, Cgroup, GpuDevice, GpuFacts, GpuProcess, Item,
    Listen, Load, Probed, Reach, Report, TargetProcess, Tracefs,
};
use crate::{
    capture::{
        self, privilege,
        procfs::{self, Proc, TCP_LISTEN},
        Capture, BTF, TRACEFS,
    },
    config::RunConfig,
    export::Protocol,
    gpu::{nvml::NvmlSource, GpuSource as _},
};

/// How long a network check waits for an answer.
const NET_TIMEOUT: Duration = Duration::from_secs(2);
/// Target processes listed at most (a `--comm python` can match hundreds).
const MAX_TARGETS: usize = 256;

/// What the user asked `strike check` to do beyond reading.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Load and attach the programs, then detach them (off for a periodic health probe).
    pub load: bool,
}

/// Runs every check against this host and `config` (what `strike run` would use).
pub fn run(config: &RunConfig, options: Options) -> Report {
    let mut checks = vec![
        judge_kernel(&kernel_release()),
        judge_btf(Path::new(BTF).exists()),
    ];
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let caps = match privilege::effective() {
        Ok(caps) => {
            checks.push(judge_privileges(uid, caps));
            Some(caps)
        }
        Err(e) => {
            checks.push(Item::fail(
                "privileges",
                format!("cannot read /proc/self/status: {e}"),
                "mount /proc",
            ));
            None
        }
    };
    let privileged = caps.is_some_and(|c| privilege::missing(c).is_empty());
    checks.push(features(privileged));
    let tracefs = tracefs();
    checks.push(judge_tracefs(tracefs, caps.unwrap_or_default()));
    checks.push(judge_tracepoints(&capture::missing_tracepoints(), tracefs));
    let tracefs_usable = match tracefs {
        Tracefs::Ready => true,
        Tracefs::Unreadable => false,
        Tracefs::NotMounted => caps.is_some_and(|c| c.has(privilege::Cap::SysAdmin)),
    };
    let status = std::fs::read_to_string("/proc/self/status").ok();
    checks.push(judge_load(
        &load(config, options, privileged, tracefs_usable),
        status.as_deref().and_then(parse_seccomp),
    ));
    checks.push(judge_pid_namespace(
        status.as_deref().and_then(parse_nspid).as_deref(),
    ));
    checks.push(judge_cgroup(cgroup()));
    let gpu = gpu_facts();
    checks.push(judge_gpu(config.gpu.enabled, &gpu));
    checks.push(judge_otlp(&otlp(config)));
    checks.push(judge_listen(&listen(config)));
    let targets = if has_selection(config) {
        let found = targets(config);
        checks.push(judge_targets(
            &config.targets.describe(),
            config.targets.is_dynamic(),
            &found,
        ));
        Some(found)
    } else {
        None
    };
    Report::new(checks, gpu.ok(), targets)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_owned())
}

fn tracefs() -> Tracefs {
    const TRACEFS_MAGIC: i64 = 0x7472_6163;
    if Path::new(TRACEFS).join("events").join("syscalls").exists() {
        Tracefs::Ready
    } else if fs_magic(c"/sys/kernel/tracing") == Some(TRACEFS_MAGIC) {
        Tracefs::Unreadable
    } else {
        Tracefs::NotMounted
    }
}

/// The filesystem type (`f_type`) of the mount holding `path`.
fn fs_magic(path: &std::ffi::CStr) -> Option<i64> {
    // SAFETY: `path` is NUL-terminated and `buf` is a valid out pointer for statfs.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        (libc::statfs(path.as_ptr(), &raw mut buf) == 0).then_some(buf.f_type)
    }
}

/// The bpf(2) feature probes, which need `CAP_BPF` to run at all.
fn features(privileged: bool) -> Item {
    if !privileged {
        let why: Probed = Err("needs the capabilities above".to_owned());
        return judge_features(&why, &why);
    }
    let ringbuf = is_map_supported(MapType::RingBuf).map_err(|e| e.to_string());
    let bpf_loop = is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop)
        .map_err(|e| e.to_string());
    judge_features(&ringbuf, &bpf_loop)
}

/// Loads and attaches every program as `strike run` does, then drops them (which detaches).
fn load(config: &RunConfig, options: Options, privileged: bool, tracefs: bool) -> Load {
    if !options.load {
        return Load::NotAsked;
    }
    if !privileged {
        return Load::Blocked("the capabilities above are missing");
    }
    if !tracefs {
        return Load::Blocked("tracefs can be neither read nor mounted");
    }
    if !capture::has_programs() {
        return Load::Failed(capture::CaptureError::NoObject.to_string());
    }
    let started = Instant::now();
    let loaded = capture::preflight().and_then(|()| Capture::load(&config.capture()));
    match loaded {
        Ok(capture) => {
            let (programs, tracepoints) = capture.attached();
            drop(capture);
            Load::Loaded(
                programs,
                tracepoints,
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            )
        }
        Err(e) => Load::Failed(chain(&e)),
    }
}

/// An error and its causes on one line.
fn chain(e: &capture::CaptureError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some messages quote their cause already.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn cgroup() -> Cgroup {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    match fs_magic(c"/sys/fs/cgroup") {
        Some(CGROUP2_SUPER_MAGIC) => Cgroup::V2,
        Some(_) if fs_magic(c"/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) => {
            Cgroup::Hybrid
        }
        Some(_)
            if Path::new("/sys/fs/cgroup/cpu").exists()
                || Path::new("/sys/fs/cgroup/memory").exists() =>
        {
            Cgroup::V1
        }
        _ => Cgroup::Absent,
    }
}

fn gpu_facts() -> Result<GpuFacts, String> {
    let mut source = NvmlSource::new().map_err(|e| e.to_string())?;
    let migs = source.mig_modes();
    let samples = source.sample(0).map_err(|e| e.to_string())?;
    let devices = samples
        .into_iter()
        .map(|s| GpuDevice {
            index: s.index,
            mig_enabled: migs.get(s.index as usize).copied().flatten(),
            name: s.name,
            uuid: s.uuid,
            power_w: s.power_mw.map(|mw| f64::from(mw) / 1000.0),
            #[expect(clippy::cast_precision_loss, reason = "joules for display")]
            energy_j: s.energy_mj.map(|mj| mj as f64 / 1000.0),
            memory_used_bytes: s.mem_used_bytes,
            memory_total_bytes: s.mem_total_bytes,
            utilization_pct: s.util_gpu_pct,
            processes: s
                .processes
                .iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_bytes: p.used_mem_bytes,
                })
                .collect(),
        })
        .collect();
    Ok(GpuFacts {
        driver_version: source.driver_version(),
        devices,
    })
}

/// The collector `strike run` would export to, as the OTLP exporter resolves it: the
/// configured endpoint, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// else the protocol's default.
fn otlp(config: &RunConfig) -> Reach {
    if !config.otlp.enabled {
        return Reach::Disabled;
    }
    let export = match config.otlp.export_config() {
        Ok(e) => e,
        Err(e) => {
            return Reach::Invalid {
                endpoint: config.otlp.endpoint.clone().unwrap_or_default(),
                error: e.to_string(),
            }
        }
    };
    let endpoint = export
        .endpoint
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .unwrap_or_else(|| match export.protocol {
            Protocol::Grpc => "http://localhost:4317".to_owned(),
            Protocol::HttpProtobuf => "http://localhost:4318".to_owned(),
        });
    match endpoint_addrs(&endpoint) {
        Err(error) => Reach::Invalid { endpoint, error },
        Ok(addrs) => {
            let started = Instant::now();
            let mut last = String::from("the name resolves to no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, NET_TIMEOUT) {
                    Ok(_) => {
                        return Reach::Reached {
                            endpoint,
                            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        }
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            Reach::Unreachable {
                endpoint,
                error: last,
            }
        }
    }
}

/// The socket addresses of an `http(s)://host[:port][/path]` URL.
fn endpoint_addrs(endpoint: &str) -> Result<Vec<SocketAddr>, String> {
    let uri: http::Uri = endpoint
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let host = uri.host().ok_or("no host")?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        (None, _) => return Err("no scheme (http:// or https://)".to_owned()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| format!("cannot resolve {host}: {e}"))
}

fn listen(config: &RunConfig) -> Listen {
    let addr = match config.listen_addr() {
        Ok(None) => return Listen::Disabled,
        Ok(Some(a)) => a,
        Err(e) => return Listen::Invalid(e.to_string()),
    };
    let shown = addr.to_string();
    match TcpListener::bind(addr) {
        Ok(_) => Listen::Free {
            addr: shown,
            loopback: addr.ip().is_loopback(),
        },
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Listen::InUse {
            healthz: healthz(addr).ok(),
            addr: shown,
        },
        Err(e) => Listen::CannotBind {
            addr: shown,
            error: e.to_string(),
        },
    }
}

/// The status code of `GET /healthz` at `addr` (on loopback when it is a wildcard).
fn healthz(mut addr: SocketAddr) -> io::Result<u16> {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut stream = TcpStream::connect_timeout(&addr, NET_TIMEOUT)?;
    stream.set_read_timeout(Some(NET_TIMEOUT))?;
    stream.set_write_timeout(Some(NET_TIMEOUT))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::with_capacity(1024);
    stream.take(4096).read_to_end(&mut buf)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf) {
        Ok(_) => response
            .code
            .ok_or_else(|| io::Error::other("no status line")),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

fn has_selection(config: &RunConfig) -> bool {
    let t = &config.targets;
    !t.pids.is_empty() || t.is_dynamic()
}

/// The processes the selection matches now, as the session would take them.
fn targets(config: &RunConfig) -> Vec<TargetProcess> {
    let proc = Proc::default();
    config
        .targets
        .resolve(&proc)
        .into_iter()
        .take(MAX_TARGETS)
        .map(|pid| {
            let sockets = proc.open_sockets(pid);
            let mut listening: Vec<u16> = sockets
                .iter()
                .filter_map(|s| s.tcp)
                .filter(|t| t.state == TCP_LISTEN)
                .map(|t| t.local.port())
                .collect();
            listening.sort_unstable();
            listening.dedup();
            TargetProcess {
                pid,
                comm: proc.comm(pid).unwrap_or_default(),
                exe: std::fs::read_link(proc.root().join(format!("{pid}/exe")))
                    .ok()
                    .map(|p| p.display().to_string()),
                sockets: sockets.len(),
                listening,
                container_id: procfs::container_id(&proc.cgroups(pid)),
                tokenizer: "estimate: bytes/4 for a prompt, one token per streamed delta, when a response carries no usage".to_owned(),
            }
        })
        .collect()
}
