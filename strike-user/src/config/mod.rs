//! Configuration of `strike run`: a YAML file, then `STRIKE_*` environment variables, then
//! command-line flags, each overriding the one before.
//!
//! The layers are merged as YAML trees and deserialized once into [`RunConfig`], so every
//! setting has one name in every layer: the file's `otlp.endpoint` is `STRIKE_OTLP_ENDPOINT`
//! in the environment. Errors name the layer that brought the bad value (file and line,
//! variable, or flag). The standard `OTEL_*` variables configure the OTLP exporter where
//! Strike's own layers leave a setting unset (`null`); see [`OtlpSection::export_config`].

mod loader;
mod otel;
mod validate;

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};
use strike_common::DEFAULT_MAX_CAPTURE;

pub use self::{
    loader::{variable_names, ConfigLoader, Override, CONFIG_FILE_VAR, FILE_ONLY_SETTINGS},
    otel::otel_defaults,
};
use crate::{
    capture::CaptureConfig, cost::CostConfig, export::ExportConfig, session::TargetSelector,
};

/// Default address of Strike's own HTTP endpoint (`/metrics`, `/v1/requests/{id}`):
/// localhost, the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Everything `strike run` can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub targets: TargetSelector,
    pub capture: CaptureSection,
    pub otlp: OtlpSection,
    pub server: ServerSection,
    pub output: OutputSection,
    pub gpu: GpuSection,
    pub cost: CostConfig,
}

/// GPU sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuSection {
    /// `true`: NVML is required; `false`: no GPU sampling; `null`: NVML when present.
    pub enabled: Option<bool>,
    /// Milliseconds between samples.
    pub sample_interval_ms: u64,
}

impl Default for GpuSection {
    fn default() -> Self {
        Self {
            enabled: None,
            sample_interval_ms: 250,
        }
    }
}

/// Default `capture.buffers_mib`: the stream stage's and the tracker's default budgets.
pub const DEFAULT_BUFFERS_MIB: u32 = 256;

/// Kernel capture limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    /// Bytes captured from one syscall at most; the rest is counted as truncated.
    pub max_capture_bytes: u32,
    /// Kernel ring buffer size in MiB (a power of two).
    pub ring_mib: u32,
    /// MiB that the buffers of all captured connections may hold together in userspace
    /// (heads and bodies in progress, reorder windows): a quarter to the stream stage, the
    /// rest to the request tracker. Past it the least recently active connections are
    /// evicted (`budget_evictions`). 256 MiB is half of the agent's 512 MiB limit in the
    /// `DaemonSet`.
    pub buffers_mib: u32,
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            max_capture_bytes: DEFAULT_MAX_CAPTURE,
            ring_mib: 16,
            buffers_mib: DEFAULT_BUFFERS_MIB,
        }
    }
}

/// OTLP export. Unset (`null`) settings fall back to the `OTEL_*` variables, then to the
/// OpenTelemetry defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpSection {
    /// Export spans and metrics over OTLP at all.
    pub enabled: bool,
    /// Collector URL (`http://host:4317` for gRPC, `http://host:4318` for HTTP).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// Request headers (gRPC metadata), e.g. an API key for a hosted collector.
    pub headers: BTreeMap<String, String>,
    /// Timeout of one export, seconds.
    pub timeout_s: Option<f64>,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue_size: Option<usize>,
    /// Seconds between metric exports.
    pub metric_interval_s: Option<f64>,
    /// `service.name` of Strike's resource.
    pub service_name: Option<String>,
    /// More resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// `gen_ai.provider.name` of every span and point.
    pub provider_name: String,
    /// Also emit the deprecated `gen_ai.system`.
    pub legacy_gen_ai_system: bool,
    /// Export the server's error messages (they can echo request content).
    pub include_error_messages: bool,
}

impl Default for OtlpSection {
    fn default() -> Self {
        let export = ExportConfig::default();
        Self {
            enabled: true,
            endpoint: None,
            protocol: None,
            headers: BTreeMap::new(),
            timeout_s: None,
            queue_size: None,
            metric_interval_s: None,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            provider_name: export.provider_name,
            legacy_gen_ai_system: export.legacy_gen_ai_system,
            include_error_messages: export.include_error_messages,
        }
    }
}

/// Strike's own HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address of `/metrics`, `/v1/requests/{id}` and `/healthz`; `null` disables it.
    pub listen: Option<String>,
    /// Records kept for lookup by id (the most recent ones).
    pub recent_requests: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_LISTEN.to_owned()),
            recent_requests: 10_000,
        }
    }
}

/// Local output of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSection {
    /// `none`, or `json`: one JSON record per line on stdout.
    pub records: RecordsOutput,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            records: RecordsOutput::None,
        }
    }
}

/// Where records go besides the exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordsOutput {
    None,
    Json,
}

/// A configuration error, naming where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{origin}: {message}")]
    Value { origin: String, message: String },
    #[error("unknown environment variable {name}; Strike reads {known}")]
    UnknownVariable { name: String, known: String },
    #[error("{0}")]
    Invalid(String),
}

impl RunConfig {
    /// The parsed `server.listen`, when enabled.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        self.server
            .listen
            .as_deref()
            .map(|l| {
                let l = l.trim();
                l.parse().or_else(|e| {
                    l.strip_prefix("localhost:")
                        .map_or(Err(e), |port| format!("127.0.0.1:{port}").parse())
                })
            })
            .transpose()
    }

    /// The kernel capture settings.
    pub fn capture(&self) -> CaptureConfig {
        CaptureConfig {
            max_capture_bytes: self.capture.max_capture_bytes,
            ring_bytes: self.capture.ring_mib << 20,
        }
    }

    /// The byte budgets of the stream stage and of the request tracker
    /// (`capture.buffers_mib`: a quarter and three quarters).
    pub fn buffer_budgets(&self) -> (usize, usize) {
        let total = usize::try_from(self.capture.buffers_mib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20);
        let stream = total / 4;
        (stream, total - stream)
    }

    /// The configuration as YAML, with header values (credentials) redacted.
    pub fn to_redacted_yaml(&self) -> String {
        let mut shown = self.clone();
        for value in shown.otlp.headers.values_mut() {
            "<redacted>".clone_into(value);
        }
        serde_yaml_ng::to_string(&shown).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
