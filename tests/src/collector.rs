//! A real OpenTelemetry collector for the export tests: rotel (`PyPI` `rotel`, a Rust
//! collector) with `tests/tools/rotel_jsonl_processor.py` writing every span and metric point
//! it receives as one JSON line to a sink file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::process::{send_signal, wait_timeout};

/// A running `rotel-agent`, killed when dropped.
#[derive(Debug)]
pub struct Rotel {
    pub grpc_port: u16,
    pub http_port: u16,
    pub sink: PathBuf,
    child: Option<std::process::Child>,
}

/// The processor script of this checkout.
pub fn processor_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/rotel_jsonl_processor.py")
}

impl Rotel {
    /// Starts `agent` receiving OTLP/gRPC and OTLP/HTTP on 127.0.0.1, writing to `sink`
    /// (log `<sink>.log`), and waits until both ports accept connections.
    pub fn start(agent: &Path, grpc_port: u16, http_port: u16, sink: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(sink);
        let log_path = sink.with_extension("log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let processor = processor_script();
        let child = Command::new(agent)
            .args(["start", "--exporter", "blackhole"])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .arg("--otlp-with-trace-processor")
            .arg(&processor)
            .arg("--otlp-with-metrics-processor")
            .arg(&processor)
            .env("ROTEL_SINK", sink)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", agent.display()))?;
        let mut rotel = Rotel {
            grpc_port,
            http_port,
            sink: sink.to_owned(),
            child: Some(child),
        };
        let started = Instant::now();
        for port in [grpc_port, http_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = rotel
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    rotel.child = None;
                    bail!(
                        "rotel exited with {status}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                if started.elapsed() > Duration::from_secs(20) {
                    bail!("rotel did not listen on {port} within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        println!(
            "rotel: receiving OTLP on 127.0.0.1:{grpc_port} (gRPC) and :{http_port} (HTTP) after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(rotel)
    }

    /// Kills the collector at once (an outage: no graceful drain).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            send_signal(&child, libc::SIGKILL)?;
            wait_timeout(&mut child, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Stops the collector, giving it time to write what it received.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            send_signal(&child, libc::SIGTERM)?;
            if wait_timeout(&mut child, Duration::from_secs(10))?.is_none() {
                child.kill()?;
                child.wait()?;
            }
        }
        Ok(())
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every JSON line of a sink file (none when it does not exist yet).
pub fn read_sink(sink: &Path) -> Vec<Value> {
    std::fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls `sink` until `done` holds for its lines, or `timeout`; returns the last lines read.
pub fn wait_for(sink: &Path, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let lines = read_sink(sink);
        if done(&lines) || started.elapsed() > timeout {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
