//! Child processes of an end-to-end test: the inference server and `strike trace`.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::env;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `GET path` on 127.0.0.1:port with `Connection: close`; returns the status code.
pub fn http_get_status(port: u16, path: &str) -> Result<u16> {
    http_get(port, path).map(|(status, _)| status)
}

/// `GET path` on 127.0.0.1:port with `Connection: close`; returns the status code and the
/// body (responses with a length, not chunked).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status line in {head:?}"))?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// Sends `sig` to the child.
pub fn send_signal(child: &Child, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill has no memory-safety preconditions; pid is our own un-reaped child.
    let rc = unsafe { libc::kill(pid, sig) };
    ensure!(
        rc == 0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command that starts `strike`: `bin` itself, or under `STRIKE_UNPRIVILEGED=1`
/// `setpriv` running it as a non-root uid with only the capabilities it needs (see
/// [`env::unprivileged`]). setpriv execs `bin`, so the child's pid is strike's.
pub fn strike_command(bin: &Path) -> Command {
    if env::unprivileged() {
        let mut cmd = Command::new(env::SETPRIV);
        cmd.args(env::setpriv_args(env::UNPRIVILEGED_UID, env::STRIKE_CAPS))
            .arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A server under test, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Spawns `cmd` with stdout and stderr to `log`, then polls `GET /health` until it answers
    /// 200 (llama-server answers 503 while it loads the model).
    pub fn start(
        name: &str,
        mut cmd: Command,
        port: u16,
        log: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let mut service = Service {
            name: name.to_owned(),
            port,
            log: log.to_owned(),
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if let Some(child) = service.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    service.child = None;
                    bail!(
                        "{name} exited with {status} before it was healthy; log tail:\n{}",
                        tail(log, 30)
                    );
                }
            }
            if http_get_status(port, "/health").ok() == Some(200) {
                println!(
                    "{name}: healthy on 127.0.0.1:{port} after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(service);
            }
            if started.elapsed() > timeout {
                bail!(
                    "{name} not healthy on port {port} after {timeout:?}; log tail:\n{}",
                    tail(log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            send_signal(&child, libc::SIGTERM)?;
            if wait_timeout(&mut child, Duration::from_secs(10))?.is_none() {
                child.kill()?;
                child.wait()?;
            }
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}

/// A running `strike trace --format json`, killed if dropped before [`Strike::finish`].
#[derive(Debug)]
pub struct Strike {
    child: Option<Child>,
    launch: Launch,
    stdout_path: PathBuf,
    summary_path: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

/// What `strike trace` left behind after SIGINT.
#[derive(Debug)]
pub struct StrikeOutput {
    pub status: ExitStatus,
    /// Every JSON line of stdout.
    pub records: Vec<Value>,
    /// Lines of stdout that were not JSON objects.
    pub bad_lines: Vec<String>,
    /// The parsed `--summary-file`.
    pub summary: Value,
    pub stderr: Vec<String>,
    pub stopped_in: Duration,
}

/// Stderr line that tells probes are attached and targets registered (`strike trace`).
pub const ATTACHED: &str = "strike: attached";
/// The same for `strike run`.
pub const RUNNING: &str = "strike: running";

/// How a test starts `strike`.
#[derive(Debug, Clone)]
pub enum Launch {
    /// The binary on the host: as root, or through `setpriv` under `STRIKE_UNPRIVILEGED=1`
    /// (see [`strike_command`]).
    Host(PathBuf),
    /// `podman run` of an image, as the `DaemonSet` runs it: the host's PID namespace (and
    /// network, for its servers on 127.0.0.1), uid 0 holding only [`env::STRIKE_CAPS`] with
    /// `no_new_privs`, the seccomp profile of [`SECCOMP_PROFILE_ENV`], a read-only root filesystem, tracefs
    /// and the cgroup hierarchy mounted read-only, and the test's directory at the same path.
    Container {
        image: String,
        /// The container's name, unique per test.
        name: String,
    },
}

/// Where podman is (Debian's package).
pub const PODMAN: &str = "podman";

/// The seccomp profile [`Launch::Container`] runs under, when set: `cargo xtask image`'s
/// `target/image/seccomp.json` (podman's default plus `bpf(2)` with `CAP_BPF` and
/// `perf_event_open(2)` with `CAP_PERFMON`); otherwise podman's default.
pub const SECCOMP_PROFILE_ENV: &str = "STRIKE_SECCOMP_PROFILE";

impl Launch {
    /// The command that runs `strike` with `args` and `envs`, writing into `dir`.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Command {
        match self {
            Launch::Host(bin) => {
                let mut cmd = strike_command(bin);
                cmd.args(args).envs(envs.iter().copied());
                cmd
            }
            Launch::Container { image, name } => {
                let mut cmd = Command::new(PODMAN);
                cmd.args(container_args(name, dir));
                for (k, v) in envs {
                    cmd.arg(format!("--env={k}={v}"));
                }
                cmd.arg(image).args(args);
                cmd
            }
        }
    }

    /// The host pid of the `strike` process that `child` started.
    fn strike_pid(&self, child: &Child) -> Result<u32> {
        match self {
            Launch::Host(_) => Ok(child.id()),
            Launch::Container { name, .. } => container_pid(name),
        }
    }
}

/// `podman run` flags for [`Launch::Container`], up to the image.
pub fn container_args(name: &str, dir: &Path) -> Vec<String> {
    let caps = env::STRIKE_CAPS
        .iter()
        .map(|c| c.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--pull=never",
        "--pid=host",
        "--network=host",
        "--user=0:0",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--volume=/sys/kernel/tracing:/sys/kernel/tracing:ro",
        "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro",
        // The DaemonSet's probes, not the image's HEALTHCHECK (it needs systemd timers here).
        "--no-healthcheck",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(runtime_flags());
    if let Some(profile) = std::env::var_os(SECCOMP_PROFILE_ENV) {
        args.push(format!(
            "--security-opt=seccomp={}",
            Path::new(&profile).display()
        ));
    }
    args.push(format!("--cap-add={caps}"));
    args.push(format!("--name={name}"));
    args.push(format!("--volume={0}:{0}", dir.display()));
    args
}

/// Flags for this host that `cargo xtask test` passes to every `podman run` here, as it
/// builds the image with them (`xtask/src/image.rs`, `runtime_flags`): space-separated.
pub const PODMAN_FLAGS_ENV: &str = "STRIKE_PODMAN_FLAGS";

/// [`PODMAN_FLAGS_ENV`]'s flags, none when unset.
pub fn runtime_flags() -> Vec<String> {
    std::env::var(PODMAN_FLAGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The host pid of the running container `name`'s process, waiting up to 30 s for podman to
/// report it.
pub fn container_pid(name: &str) -> Result<u32> {
    let started = Instant::now();
    loop {
        let out = Command::new(PODMAN)
            .args(["inspect", "--format", "{{.State.Pid}}", name])
            .output()
            .context("running podman inspect")?;
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok();
        if let Some(pid) = pid.filter(|p| *p > 0) {
            return Ok(pid);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "podman reported no pid for container {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the container `name` if it still exists (a test that failed midway).
pub fn remove_container(name: &str) {
    let _ = Command::new(PODMAN)
        .args(["rm", "--force", "--ignore", "--time=2", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Strike {
    /// Starts `strike trace --format json --port <port> --summary-file <dir>/summary.json`,
    /// stdout to `<dir>/records.jsonl`, and waits for [`ATTACHED`] on stderr.
    pub fn start(bin: &Path, port: u16, dir: &Path, timeout: Duration) -> Result<Self> {
        Self::start_with(bin, port, &[], dir, timeout)
    }

    /// [`Strike::start`] with more `strike trace` flags.
    pub fn start_with(
        bin: &Path,
        port: u16,
        flags: &[&str],
        dir: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        Self::trace(&Launch::Host(bin.to_owned()), port, flags, dir, timeout)
    }

    /// [`Strike::start_with`], started by `launch`.
    pub fn trace(
        launch: &Launch,
        port: u16,
        flags: &[&str],
        dir: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let port = port.to_string();
        let mut args = vec!["trace", "--format", "json", "--port", &port];
        args.extend_from_slice(flags);
        Self::spawn(launch, &args, &[], dir, ATTACHED, timeout)
    }

    /// Starts `strike run --output json <args> --summary-file <dir>/summary.json` with `envs`,
    /// stdout to `<dir>/records.jsonl`, and waits for [`RUNNING`] on stderr.
    pub fn start_run(
        bin: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let mut all = vec!["run", "--output", "json"];
        all.extend_from_slice(args);
        Self::spawn(
            &Launch::Host(bin.to_owned()),
            &all,
            envs,
            dir,
            RUNNING,
            timeout,
        )
    }

    fn spawn(
        launch: &Launch,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
        ready: &'static str,
        timeout: Duration,
    ) -> Result<Self> {
        let stdout_path = dir.join("records.jsonl");
        let summary_path = dir.join("summary.json");
        let _ = std::fs::remove_file(&summary_path);
        let stdout = File::create(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        if env::unprivileged() && matches!(launch, Launch::Host(_)) {
            // strike writes its summary (and any --record) here, as that uid.
            let id = env::UNPRIVILEGED_UID;
            std::os::unix::fs::chown(dir, Some(id), Some(id))
                .with_context(|| format!("chown {id} {}", dir.display()))?;
        }
        if let Launch::Container { name, .. } = launch {
            remove_container(name);
        }
        let summary = summary_path.display().to_string();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--summary-file", &summary]);
        let mut cmd = launch.command(&all, envs, dir);
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (attached_tx, attached_rx) = mpsc::channel();
        let reader = {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("  [strike] {line}");
                    if line.starts_with(ready) {
                        let _ = attached_tx.send(());
                    }
                    stderr
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            })
        };
        let mut strike = Strike {
            child: Some(child),
            launch: launch.clone(),
            stdout_path,
            summary_path,
            stderr,
            reader: Some(reader),
        };
        let started = Instant::now();
        loop {
            if attached_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                let identity = strike.identity()?;
                println!(
                    "strike: ready after {:.1} s, {identity}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(strike);
            }
            if let Some(child) = strike.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    strike.child = None;
                    bail!("strike exited with {status} before `{ready}`");
                }
            }
            if started.elapsed() > timeout {
                bail!("strike printed no `{ready}` within {timeout:?}");
            }
        }
    }

    /// Strike's uid and effective capabilities, from `/proc/PID/status`; under
    /// `STRIKE_UNPRIVILEGED=1`, an error unless they are exactly [`env::UNPRIVILEGED_UID`] and
    /// [`env::STRIKE_CAPS`].
    fn identity(&self) -> Result<String> {
        let child = self.child.as_ref().context("strike exited")?;
        let pid = self.launch.strike_pid(child)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        let uids = field("Uid:")?.to_owned();
        let cap_eff = u64::from_str_radix(field("CapEff:")?, 16)?;
        let no_new_privs = field("NoNewPrivs:")? == "1";
        let text =
            format!("pid {pid}, uids {uids}, CapEff {cap_eff:#x}, NoNewPrivs {no_new_privs}");
        if let Launch::Container { .. } = self.launch {
            // The DaemonSet's identity: uid 0 holding exactly the four capabilities.
            ensure!(
                uids.split_whitespace().all(|u| u == "0")
                    && cap_eff == env::STRIKE_CAPS_MASK
                    && no_new_privs,
                "strike in its container runs with {text}, not uid 0 with exactly {:#x} ({}) and NoNewPrivs",
                env::STRIKE_CAPS_MASK,
                env::STRIKE_CAPS.join(", ")
            );
        } else if env::unprivileged() {
            let uid = env::UNPRIVILEGED_UID.to_string();
            ensure!(
                uids.split_whitespace().all(|u| u == uid),
                "STRIKE_UNPRIVILEGED=1 but strike runs with {text}"
            );
            ensure!(
                cap_eff == env::STRIKE_CAPS_MASK,
                "STRIKE_UNPRIVILEGED=1 but strike runs with {text}, not {:#x} ({})",
                env::STRIKE_CAPS_MASK,
                env::STRIKE_CAPS.join(", ")
            );
        }
        Ok(text)
    }

    /// Strike's resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let pid = self.launch.strike_pid(self.child.as_ref()?).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Waits until strike has written at least `n` records to stdout, or `timeout` passed;
    /// returns how many it has written (the caller's checks say what is missing).
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> usize {
        let started = Instant::now();
        loop {
            let written = std::fs::read_to_string(&self.stdout_path)
                .map_or(0, |t| t.lines().filter(|l| l.ends_with('}')).count());
            if written >= n || started.elapsed() > timeout {
                return written;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT, waits up to `timeout` for strike to drain and exit, and reads its output.
    pub fn finish(self, timeout: Duration) -> Result<StrikeOutput> {
        self.finish_with(libc::SIGINT, timeout)
    }

    /// Sends `signal`, waits up to `timeout` for strike to drain and exit, and reads its output.
    pub fn finish_with(mut self, signal: libc::c_int, timeout: Duration) -> Result<StrikeOutput> {
        let mut child = self.child.take().context("strike already stopped")?;
        let t0 = Instant::now();
        send_signal(&child, signal)?;
        let Some(status) = wait_timeout(&mut child, timeout)? else {
            child.kill()?;
            child.wait()?;
            bail!("strike did not exit within {timeout:?} of signal {signal} (killed)");
        };
        let stopped_in = t0.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let text = std::fs::read_to_string(&self.stdout_path)?;
        let mut records = Vec::new();
        let mut bad_lines = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => records.push(v),
                _ => bad_lines.push(line.to_owned()),
            }
        }
        let summary_text = std::fs::read_to_string(&self.summary_path).with_context(|| {
            format!(
                "strike wrote no summary file {}",
                self.summary_path.display()
            )
        })?;
        let summary = serde_json::from_str(&summary_text)
            .with_context(|| format!("summary file is not JSON: {summary_text:?}"))?;
        let stderr =
            std::mem::take(&mut *self.stderr.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(StrikeOutput {
            status,
            records,
            bad_lines,
            summary,
            stderr,
            stopped_in,
        })
    }
}

impl Drop for Strike {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Killing podman's client leaves its container running.
        if let Launch::Container { name, .. } = &self.launch {
            remove_container(name);
        }
    }
}
