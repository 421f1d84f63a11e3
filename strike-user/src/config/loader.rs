//! The layers of a configuration and their merge: the YAML file, then `STRIKE_*`
//! variables, then flags. Each setting's final value keeps its origin, so a value that
//! fails validation is reported as the user wrote it: `--ring-mib="3"`,
//! `STRIKE_CAPTURE_RING_MIB="3"` or `config file strike.yaml, capture.ring_mib`.

use std::{collections::BTreeMap, path::Path};

use serde_yaml_ng::{Mapping, Value};

use super::{ConfigError, RunConfig};

/// How a value is written outside YAML (environment variables and flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
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
pub(super) const SETTINGS: &[(&str, Shape)] = &[
    ("targets.pids", Shape::List),
    ("targets.ports", Shape::List),
    ("targets.comms", Shape::List),
    ("targets.cgroups", Shape::List),
    ("targets.containers", Shape::List),
    ("targets.follow_children", Shape::Scalar),
    ("capture.max_capture_bytes", Shape::Scalar),
    ("capture.ring_mib", Shape::Scalar),
    ("capture.buffers_mib", Shape::Scalar),
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
    ("cost.api_key_hash_key_file", Shape::Text),
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

pub(super) fn env_name(path: &str) -> String {
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

/// Builds a [`RunConfig`] from its layers: the one path by which `strike run`,
/// `strike trace` and `strike replay` are configured.
#[derive(Debug)]
pub struct ConfigLoader {
    file: Option<(String, String)>,
    overrides: Vec<Override>,
    selects_targets: bool,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self {
            file: None,
            overrides: Vec::new(),
            selects_targets: true,
        }
    }
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

    /// Adds the flags that were given (`Some`), in order: `(flag, setting, value)`.
    #[must_use]
    pub fn flags<'a>(
        self,
        flags: impl IntoIterator<Item = (&'a str, &'static str, Option<String>)>,
    ) -> Self {
        flags
            .into_iter()
            .filter_map(|(flag, path, value)| Some((flag, path, value?)))
            .fold(self, |loader, (flag, path, value)| {
                loader.flag(flag, path, value)
            })
    }

    /// For a command that traces nothing (`strike replay`): an empty target selection is
    /// no error.
    #[must_use]
    pub fn without_targets(mut self) -> Self {
        self.selects_targets = false;
        self
    }

    /// Merges the layers and validates the result, once; an invalid value is reported
    /// with the origin of its final layer.
    pub fn load(self) -> Result<RunConfig, ConfigError> {
        let mut tree = serde_yaml_ng::to_value(RunConfig::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut origins = BTreeMap::new();
        if let Some((path, text)) = &self.file {
            // Deserialize the file alone first: its errors carry line and column.
            let file_error = |e: serde_yaml_ng::Error| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            };
            if !text.trim().is_empty() {
                serde_yaml_ng::from_str::<RunConfig>(text).map_err(file_error)?;
                let file: Value = serde_yaml_ng::from_str(text).map_err(file_error)?;
                for setting in settings_in(&file) {
                    let origin = format!("config file {path}, {setting}");
                    origins.insert(setting, origin);
                }
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
            let origin = format!("{}={:?}", o.origin, o.value);
            // Check each value as it lands, so an error names its origin.
            serde_yaml_ng::from_value::<RunConfig>(tree.clone()).map_err(|e| {
                ConfigError::Value {
                    origin: origin.clone(),
                    message: e.to_string(),
                }
            })?;
            origins.insert(o.path.to_owned(), origin);
        }
        let config: RunConfig =
            serde_yaml_ng::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        super::validate::check(&config, self.selects_targets).map_err(
            |invalid| match origin_of(&origins, invalid.setting) {
                Some(origin) => ConfigError::Value {
                    origin: origin.clone(),
                    message: invalid.message,
                },
                None => ConfigError::Invalid(invalid.message),
            },
        )?;
        Ok(config)
    }
}

/// The `section.key` paths a YAML tree sets (a map-valued setting counts once).
fn settings_in(tree: &Value) -> Vec<String> {
    let Some(root) = tree.as_mapping() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (section, keys) in root {
        let (Some(section), Some(keys)) = (section.as_str(), keys.as_mapping()) else {
            continue;
        };
        out.extend(
            keys.keys()
                .filter_map(Value::as_str)
                .map(|key| format!("{section}.{key}")),
        );
    }
    out
}

/// Where the value of `setting` came from: its own origin, or that of the setting that
/// holds it (`cost.token_prices` for `cost.token_prices.tiers`), or, for a section-wide
/// check (`targets`), any of its settings'.
fn origin_of<'a>(origins: &'a BTreeMap<String, String>, setting: &str) -> Option<&'a String> {
    origins
        .iter()
        .filter(|(path, _)| {
            setting == path.as_str()
                || setting
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(path, _)| path.len())
        .or_else(|| {
            let section = format!("{setting}.");
            origins.iter().find(|(path, _)| path.starts_with(&section))
        })
        .map(|(_, origin)| origin)
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

/// The names of every setting variable, for help texts.
pub fn variable_names() -> Vec<String> {
    SETTINGS.iter().map(|(path, _)| env_name(path)).collect()
}
