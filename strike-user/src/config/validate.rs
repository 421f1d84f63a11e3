//! What the types alone cannot check, checked once for every command: the loader reports a
//! failure with the origin of the value (flag, `STRIKE_*` variable or config file key).

use strike_common::MAX_CAPTURE_LIMIT;

use super::{RunConfig, DEFAULT_LISTEN};
use crate::{cost::CostConfig, export::Protocol, session::TargetSelector};

/// A setting whose value cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    /// `section.key` of the value at fault (`targets` for the selection as a whole).
    pub setting: &'static str,
    /// Why, naming the setting.
    pub message: String,
}

fn invalid(setting: &'static str, message: String) -> Result<(), Invalid> {
    Err(Invalid { setting, message })
}

/// Checks `config`; `selects_targets` is whether the command traces processes (an empty
/// selection is an error then).
pub(super) fn check(config: &RunConfig, selects_targets: bool) -> Result<(), Invalid> {
    targets(&config.targets, selects_targets)?;
    let c = &config.capture;
    if c.max_capture_bytes == 0 || c.max_capture_bytes > MAX_CAPTURE_LIMIT {
        return invalid(
            "capture.max_capture_bytes",
            format!(
                "capture.max_capture_bytes must be between 1 and {MAX_CAPTURE_LIMIT}, got {}",
                c.max_capture_bytes
            ),
        );
    }
    if !c.ring_mib.is_power_of_two() || c.ring_mib > 1024 {
        return invalid(
            "capture.ring_mib",
            format!(
                "capture.ring_mib must be a power of two up to 1024, got {}",
                c.ring_mib
            ),
        );
    }
    if !(4..=65_536).contains(&c.buffers_mib) {
        return invalid(
            "capture.buffers_mib",
            format!(
                "capture.buffers_mib must be between 4 and 65536, got {}",
                c.buffers_mib
            ),
        );
    }
    let o = &config.otlp;
    if let Some(p) = &o.protocol {
        if Protocol::from_name(p).is_none() {
            return invalid(
                "otlp.protocol",
                format!("otlp.protocol: {p:?}: expected grpc or http/protobuf"),
            );
        }
    }
    for (name, secs) in [
        ("otlp.timeout_s", o.timeout_s),
        ("otlp.metric_interval_s", o.metric_interval_s),
    ] {
        if let Some(s) = secs {
            if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
                return invalid(
                    name,
                    format!("{name} must be a positive number of seconds below a day, got {s}"),
                );
            }
        }
    }
    if o.queue_size == Some(0) {
        return invalid(
            "otlp.queue_size",
            "otlp.queue_size must be at least 1".into(),
        );
    }
    if let Some(listen) = &config.server.listen {
        if config.listen_addr().is_err() {
            return invalid(
                "server.listen",
                format!("server.listen: {listen:?} is not an address like {DEFAULT_LISTEN}"),
            );
        }
    }
    if config.server.recent_requests > 1_000_000 {
        return invalid(
            "server.recent_requests",
            format!(
                "server.recent_requests is at most 1000000, got {}",
                config.server.recent_requests
            ),
        );
    }
    if !(10..=60_000).contains(&config.gpu.sample_interval_ms) {
        return invalid(
            "gpu.sample_interval_ms",
            format!(
                "gpu.sample_interval_ms must be between 10 and 60000, got {}",
                config.gpu.sample_interval_ms
            ),
        );
    }
    cost(&config.cost)
}

/// The selection can match something, and only what it means to.
fn targets(t: &TargetSelector, selects_targets: bool) -> Result<(), Invalid> {
    if selects_targets
        && t.pids.is_empty()
        && t.ports.is_empty()
        && t.comms.is_empty()
        && t.cgroups.is_empty()
        && t.containers.is_empty()
    {
        return invalid(
            "targets",
            "say what to trace: --pid, --port, --comm, --cgroup or --container \
             (targets.pids, ports, comms, cgroups or containers in a config file)"
                .into(),
        );
    }
    if let Some(c) = t.comms.iter().find(|c| c.is_empty() || c.len() > 15) {
        return invalid(
            "targets.comms",
            format!("comm {c:?} cannot match: a comm is 1 to 15 bytes"),
        );
    }
    if let Some(c) = t.cgroups.iter().find(|c| c.trim().is_empty()) {
        return invalid(
            "targets.cgroups",
            format!("cgroup {c:?} would match every process"),
        );
    }
    if let Some(c) = t
        .containers
        .iter()
        .find(|c| c.len() < 12 || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return invalid(
            "targets.containers",
            format!("container {c:?} is not a container id (12 to 64 hex digits)"),
        );
    }
    Ok(())
}

/// Prices and weights are numbers that make sense.
fn cost(c: &CostConfig) -> Result<(), Invalid> {
    let non_negative = |setting: &'static str, key: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            invalid(
                setting,
                format!("{setting}{key} must be a non-negative number, got {v}"),
            )
        }
    };
    for (k, v) in &c.gpu_price_per_hour {
        non_negative("cost.gpu_price_per_hour", &format!(".{k}"), *v)?;
    }
    non_negative(
        "cost.default_gpu_price_per_hour",
        "",
        c.default_gpu_price_per_hour,
    )?;
    non_negative("cost.energy_price_per_kwh", "", c.energy_price_per_kwh)?;
    non_negative("cost.prefill_weight", "", c.prefill_weight)?;
    non_negative("cost.decode_weight", "", c.decode_weight)?;
    non_negative("cost.max_hold_s", "", c.max_hold_s)?;
    if !(c.pue.is_finite() && c.pue >= 1.0) {
        return invalid(
            "cost.pue",
            format!("cost.pue must be at least 1, got {}", c.pue),
        );
    }
    if c.prefill_weight + c.decode_weight <= 0.0 {
        return invalid(
            "cost.prefill_weight",
            "cost.prefill_weight and decode_weight cannot both be 0".into(),
        );
    }
    if let Some(t) = &c.token_prices {
        let setting = "cost.token_prices";
        non_negative(setting, ".input_per_mtok", t.input_per_mtok)?;
        non_negative(setting, ".output_per_mtok", t.output_per_mtok)?;
        if let Some(cached) = t.cached_input_per_mtok {
            non_negative(setting, ".cached_input_per_mtok", cached)?;
        }
        for tier in &t.tiers {
            non_negative(setting, ".tiers.input_per_mtok", tier.input_per_mtok)?;
            non_negative(setting, ".tiers.output_per_mtok", tier.output_per_mtok)?;
            if let Some(cached) = tier.cached_input_per_mtok {
                non_negative(setting, ".tiers.cached_input_per_mtok", cached)?;
            }
        }
    }
    if let Some(h) = &c.tenant_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return invalid(
                "cost.tenant_header",
                format!("cost.tenant_header {h:?} is not a header name"),
            );
        }
    }
    Ok(())
}
