//! Configuration of `strike run`: a YAML file, then `STRIKE_*` environment variables, then
//! command-line flags, each overriding the one before.
//!
//! The layers are merged as YAML trees and deserialized once into [`RunConfig`], so every
//! setting has one name in every layer: the file's `otlp.endpoint` is `STRIKE_OTLP_ENDPOINT`
//! in the environment. Errors name the layer that brought the bad value (file and line,
//! variable, or flag). The standard `OTEL_*` variables configure the OTLP exporter where
//! Strike's own layers leave a setting unset (`null`); see [`OtlpSection::export_config`].

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use strike_common::{DEFAULT_MAX_CAPTURE, MAX_CAPTURE_LIMIT};

use crate::{
    capture::CaptureConfig,
    cost::CostConfig,
    export::{ExportConfig, ExportError, Protocol},
    session::TargetSelector,
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

/// Kernel capture limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    /// Bytes captured from one syscall at most; the rest is counted as truncated.
    pub max_capture_bytes: u32,
    /// Kernel ring buffer size in MiB (a power of two).
    pub ring_mib: u32,
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            max_capture_bytes: DEFAULT_MAX_CAPTURE,
            ring_mib: 16,
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
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// How a value is written outside YAML (environment variables and flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// One value, kept as a string.
    Text,
    /// One value, read as a YAML scalar (number, bool, `null`).
    Scalar,
    /// A list: comma-separated scalars.
    List,
    /// A map: comma-separated `key=value` pairs.
    Map,
    /// A map of numbers: comma-separated `key=number` pairs.
    NumberMap,
}

/// Every setting: its path in the YAML tree (`section.key`) and how it is written in a
/// variable. The environment variable is `STRIKE_` + the path with `_` for `.`, upper-cased.
const SETTINGS: &[(&str, Shape)] = &[
    ("targets.pids", Shape::List),
    ("targets.ports", Shape::List),
    ("targets.comms", Shape::List),
    ("targets.cgroups", Shape::List),
    ("targets.containers", Shape::List),
    ("targets.follow_children", Shape::Scalar),
    ("capture.max_capture_bytes", Shape::Scalar),
    ("capture.ring_mib", Shape::Scalar),
    ("otlp.enabled", Shape::Scalar),
    ("otlp.endpoint", Shape::Text),
    ("otlp.protocol", Shape::Text),
    ("otlp.headers", Shape::Map),
    ("otlp.timeout_s", Shape::Scalar),
    ("otlp.queue_size", Shape::Scalar),
    ("otlp.metric_interval_s", Shape::Scalar),
    ("otlp.service_name", Shape::Text),
    ("otlp.resource_attributes", Shape::Map),
    ("otlp.provider_name", Shape::Text),
    ("otlp.legacy_gen_ai_system", Shape::Scalar),
    ("otlp.include_error_messages", Shape::Scalar),
    ("server.listen", Shape::Text),
    ("server.recent_requests", Shape::Scalar),
    ("output.records", Shape::Text),
    ("gpu.enabled", Shape::Scalar),
    ("gpu.sample_interval_ms", Shape::Scalar),
    ("cost.gpu_price_per_hour", Shape::NumberMap),
    ("cost.default_gpu_price_per_hour", Shape::Scalar),
    ("cost.energy_price_per_kwh", Shape::Scalar),
    ("cost.pue", Shape::Scalar),
    ("cost.prefill_weight", Shape::Scalar),
    ("cost.decode_weight", Shape::Scalar),
    ("cost.tenant_header", Shape::Text),
    ("cost.max_hold_s", Shape::Scalar),
];

/// Settings that only the YAML file can give (nested structures).
pub const FILE_ONLY_SETTINGS: &[&str] = &["cost.token_prices"];

/// The variable that names the config file.
pub const CONFIG_FILE_VAR: &str = "STRIKE_CONFIG";

/// Prefixes of Strike's setting variables: an unknown variable under one is a typo.
const SECTION_PREFIXES: &[&str] = &[
    "STRIKE_TARGETS_",
    "STRIKE_CAPTURE_",
    "STRIKE_OTLP_",
    "STRIKE_SERVER_",
    "STRIKE_OUTPUT_",
    "STRIKE_GPU_",
    "STRIKE_COST_",
];

fn env_name(path: &str) -> String {
    format!("STRIKE_{}", path.replace('.', "_")).to_ascii_uppercase()
}

/// A value given outside YAML, from the environment or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Where it came from, for errors: `STRIKE_OTLP_ENDPOINT`, `--otlp-endpoint`.
    pub origin: String,
    /// `section.key`.
    pub path: &'static str,
    pub value: String,
}

/// Builds a [`RunConfig`] from its layers.
#[derive(Debug, Default)]
pub struct ConfigLoader {
    file: Option<(String, String)>,
    overrides: Vec<Override>,
}

impl ConfigLoader {
    /// The YAML text of the config file, and its name for errors.
    #[must_use]
    pub fn file(mut self, path: &str, text: String) -> Self {
        self.file = Some((path.to_owned(), text));
        self
    }

    /// Reads the config file at `path`.
    pub fn read_file(self, path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Ok(self.file(&name, text))
    }

    /// Adds the `STRIKE_*` variables found through `lookup` among `names` (the process
    /// environment's names). Unknown variables under a section prefix are errors.
    pub fn env<'a>(
        mut self,
        names: impl IntoIterator<Item = &'a str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        for name in names {
            if !SECTION_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let Some(&(path, _)) = SETTINGS.iter().find(|(path, _)| env_name(path) == name) else {
                return Err(ConfigError::UnknownVariable {
                    name: name.to_owned(),
                    known: SETTINGS
                        .iter()
                        .map(|(path, _)| env_name(path))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if let Some(value) = lookup(name) {
                self.overrides.push(Override {
                    origin: name.to_owned(),
                    path,
                    value,
                });
            }
        }
        Ok(self)
    }

    /// Adds a flag's value (applied after the environment).
    #[must_use]
    pub fn flag(mut self, flag: &str, path: &'static str, value: String) -> Self {
        self.overrides.push(Override {
            origin: flag.to_owned(),
            path,
            value,
        });
        self
    }

    /// Merges the layers and validates the result.
    pub fn load(self) -> Result<RunConfig, ConfigError> {
        let mut tree = serde_yaml_ng::to_value(RunConfig::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some((path, text)) = &self.file {
            // Deserialize the file alone first: its errors carry line and column.
            let file_error = |e: serde_yaml_ng::Error| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            };
            if !text.trim().is_empty() {
                serde_yaml_ng::from_str::<RunConfig>(text).map_err(file_error)?;
                let file: Value = serde_yaml_ng::from_str(text).map_err(file_error)?;
                merge(&mut tree, file);
            }
        }
        for o in &self.overrides {
            let shape = SETTINGS
                .iter()
                .find(|(path, _)| *path == o.path)
                .map(|(_, shape)| *shape)
                .ok_or_else(|| ConfigError::Invalid(format!("no setting {}", o.path)))?;
            set(&mut tree, o.path, parse_override(&o.value, shape));
            // Check each value as it lands, so an error names its origin.
            serde_yaml_ng::from_value::<RunConfig>(tree.clone()).map_err(|e| {
                ConfigError::Value {
                    origin: format!("{}={:?}", o.origin, o.value),
                    message: e.to_string(),
                }
            })?;
        }
        let config: RunConfig =
            serde_yaml_ng::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

fn scalar(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() {
        return Value::Null;
    }
    serde_yaml_ng::from_str::<Value>(text)
        .ok()
        .filter(|v| !matches!(v, Value::Sequence(_) | Value::Mapping(_)))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

fn parse_override(text: &str, shape: Shape) -> Value {
    let items = || text.split(',').map(str::trim).filter(|s| !s.is_empty());
    match shape {
        Shape::Text => match text.trim() {
            "" | "null" | "none" => Value::Null,
            t => Value::String(t.to_owned()),
        },
        Shape::Scalar => scalar(text),
        Shape::List => Value::Sequence(items().map(scalar).collect()),
        Shape::Map | Shape::NumberMap => Value::Mapping(
            items()
                .map(|item| {
                    let (k, v) = item.split_once('=').unwrap_or((item, ""));
                    let v = if shape == Shape::NumberMap {
                        scalar(v)
                    } else {
                        Value::String(v.trim().to_owned())
                    };
                    (Value::String(k.trim().to_owned()), v)
                })
                .collect(),
        ),
    }
}

/// Deep merge: mappings merge key by key (except map-valued settings, which `over`
/// replaces whole, as lists are); anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(slot @ Value::Mapping(_)) if v.is_mapping() && is_section(&k) => {
                        merge(slot, v);
                    }
                    _ => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn is_section(key: &Value) -> bool {
    key.as_str().is_some_and(|k| {
        SETTINGS
            .iter()
            .any(|(path, _)| path.split_once('.').is_some_and(|(s, _)| s == k))
    })
}

/// Sets `section.key` in the tree.
fn set(tree: &mut Value, path: &str, value: Value) {
    let (section, key) = path.split_once('.').unwrap_or((path, ""));
    if !tree.is_mapping() {
        *tree = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(root) = tree else { return };
    let slot = root
        .entry(Value::String(section.to_owned()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(section) = slot {
        section.insert(Value::String(key.to_owned()), value);
    }
}

impl RunConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        self.targets
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("targets: {e}")))?;
        let c = &self.capture;
        if c.max_capture_bytes == 0 || c.max_capture_bytes > MAX_CAPTURE_LIMIT {
            return bad(format!(
                "capture.max_capture_bytes must be between 1 and {MAX_CAPTURE_LIMIT}, got {}",
                c.max_capture_bytes
            ));
        }
        if !c.ring_mib.is_power_of_two() || c.ring_mib > 1024 {
            return bad(format!(
                "capture.ring_mib must be a power of two up to 1024, got {}",
                c.ring_mib
            ));
        }
        if self.otlp.enabled {
            self.otlp.export_config_with(|_| None)?;
        }
        for (name, secs) in [
            ("otlp.timeout_s", self.otlp.timeout_s),
            ("otlp.metric_interval_s", self.otlp.metric_interval_s),
        ] {
            if let Some(s) = secs {
                if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
                    return bad(format!(
                        "{name} must be a positive number of seconds, got {s}"
                    ));
                }
            }
        }
        if self.otlp.queue_size == Some(0) {
            return bad("otlp.queue_size must be at least 1".into());
        }
        if let Some(listen) = &self.server.listen {
            self.listen_addr().map_err(|_| {
                ConfigError::Invalid(format!(
                    "server.listen: {listen:?} is not an address like {DEFAULT_LISTEN}"
                ))
            })?;
        }
        self.cost.validate().map_err(ConfigError::Invalid)?;
        if !(10..=60_000).contains(&self.gpu.sample_interval_ms) {
            return bad(format!(
                "gpu.sample_interval_ms must be between 10 and 60000, got {}",
                self.gpu.sample_interval_ms
            ));
        }
        if self.server.recent_requests > 1_000_000 {
            return bad(format!(
                "server.recent_requests is at most 1000000, got {}",
                self.server.recent_requests
            ));
        }
        Ok(())
    }

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

    /// The target selector.
    pub fn selector(&self) -> TargetSelector {
        let t = &self.targets;
        TargetSelector {
            pids: t.pids.clone(),
            ports: t.ports.clone(),
            comms: t.comms.clone(),
            cgroups: t.cgroups.clone(),
            containers: t
                .containers
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            follow_children: t.follow_children,
        }
    }

    /// The kernel capture settings.
    pub fn capture(&self) -> CaptureConfig {
        CaptureConfig {
            max_capture_bytes: self.capture.max_capture_bytes,
            ring_bytes: self.capture.ring_mib << 20,
        }
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

impl OtlpSection {
    /// The exporter settings: the `OTEL_*` variables (through `lookup`), overridden by
    /// what this section sets.
    pub fn export_config_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ExportConfig, ConfigError> {
        let mut c = ExportConfig::from_lookup(lookup)?;
        if let Some(endpoint) = &self.endpoint {
            c.endpoint = Some(endpoint.clone());
        }
        if let Some(protocol) = &self.protocol {
            c.protocol = match protocol.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" | "http" => Protocol::HttpProtobuf,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "otlp.protocol: {other:?}: expected grpc or http/protobuf"
                    )))
                }
            };
        }
        c.headers
            .extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(t) = self.timeout_s {
            c.timeout = Duration::try_from_secs_f64(t).ok();
        }
        if let Some(q) = self.queue_size {
            c.queue_size = q;
        }
        if let Some(i) = self.metric_interval_s {
            c.metric_interval = Duration::try_from_secs_f64(i).ok();
        }
        if let Some(name) = &self.service_name {
            c.service_name.clone_from(name);
        }
        for (k, v) in &self.resource_attributes {
            c.resource_attributes.retain(|(key, _)| key != k);
            c.resource_attributes.push((k.clone(), v.clone()));
        }
        c.provider_name.clone_from(&self.provider_name);
        c.legacy_gen_ai_system = self.legacy_gen_ai_system;
        c.include_error_messages = self.include_error_messages;
        Ok(c)
    }

    /// [`Self::export_config_with`] the process environment.
    pub fn export_config(&self) -> Result<ExportConfig, ConfigError> {
        self.export_config_with(|name| std::env::var(name).ok())
    }
}

/// The names of every setting variable, for help texts.
pub fn variable_names() -> Vec<String> {
    SETTINGS.iter().map(|(path, _)| env_name(path)).collect()
}

#[cfg(test)]
mod tests;
