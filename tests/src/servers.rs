//! The real servers the tests run against, started the same way everywhere, and their loads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::env::TestEnv;
use crate::load::{Kind, LoadPlan, GENERATION_MIX, MESSAGES_MIX};
use crate::process::{free_port, Service};

/// The model alias llama-server is started with.
pub const LLAMA_MODEL_ALIAS: &str = "tiny";
/// The model name the test app reports.
pub const APP_MODEL: &str = "strike-test-model";

/// llama.cpp's llama-server with the tiny model on a free port (log `<dir>/llama-server.log`):
/// `--metrics --no-webui --offline -t 1 -np 2`.
pub fn start_llama_server(env: &TestEnv, dir: &Path) -> Result<Service> {
    let port = free_port()?;
    let mut cmd = Command::new(env.llama_server.as_ref().context("no llama-server path")?);
    cmd.arg("-m")
        .arg(env.tiny_model.as_ref().context("no model path")?)
        .args([
            "-a",
            LLAMA_MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "--metrics",
            "--no-webui",
            "--offline",
            "-t",
            "1",
            "-np",
            "2",
        ]);
    Service::start(
        "llama-server",
        cmd,
        port,
        &dir.join("llama-server.log"),
        Duration::from_mins(1),
    )
}

/// `tests/servers/openai_app.py` on uvicorn on a free port, sleeping `token_delay_ms` before
/// each token; returns the service and the path of its request log.
pub fn start_openai_app(
    env: &TestEnv,
    dir: &Path,
    token_delay_ms: f64,
) -> Result<(Service, PathBuf)> {
    let port = free_port()?;
    let log = dir.join("app-requests.jsonl");
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(env.python.as_ref().context("no python path")?);
    cmd.arg(&env.app_script)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--token-delay-ms", &token_delay_ms.to_string()])
        .arg("--log")
        .arg(&log)
        .arg("--gzip")
        .env("STRIKE_APP_MODEL", APP_MODEL);
    let service = Service::start(
        "uvicorn-app",
        cmd,
        port,
        &dir.join("uvicorn-app.log"),
        Duration::from_mins(1),
    )?;
    Ok((service, log))
}

/// 8 workers x `per_worker` requests: the generation mix and the Messages API, `max_tokens`
/// 1..=24.
pub fn llama_plan(service: &Service, per_worker: usize) -> LoadPlan {
    LoadPlan {
        base_url: service.base_url(),
        model: LLAMA_MODEL_ALIAS.to_owned(),
        workers: 8,
        requests_per_worker: per_worker,
        mix: GENERATION_MIX
            .iter()
            .chain(&MESSAGES_MIX)
            .copied()
            .collect(),
        max_tokens: (1, 24),
        timeout: Duration::from_mins(1),
        extra: None,
        trace_salt: None,
        gzip_workers: 0,
    }
}

/// 8 workers x `per_worker` requests: the generation mix plus embeddings, `max_tokens` 1..=32;
/// half the workers accept gzip (the app compresses their JSON responses).
pub fn app_plan(service: &Service, per_worker: usize) -> LoadPlan {
    let mut mix = GENERATION_MIX.to_vec();
    mix.push(Kind::Embeddings);
    LoadPlan {
        base_url: service.base_url(),
        model: APP_MODEL.to_owned(),
        workers: 8,
        requests_per_worker: per_worker,
        mix,
        max_tokens: (1, 32),
        timeout: Duration::from_mins(1),
        extra: None,
        trace_salt: None,
        gzip_workers: 4,
    }
}

/// A fresh directory for one test's files under `base` (the test's `CARGO_TARGET_TMPDIR`).
pub fn work_dir(base: &Path, name: &str) -> Result<PathBuf> {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
