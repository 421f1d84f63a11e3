//! The standard `OTEL_*` variables, beneath Strike's own `otlp` settings: where a layer of
//! Strike's configuration leaves an OTLP setting unset (`null`), the OpenTelemetry variable
//! gives it; the SDK reads the rest itself (endpoint, headers, timeout, compression,
//! metric interval, sampler).

use std::time::Duration;

use super::{ConfigError, OtlpSection};
use crate::export::{ExportConfig, Protocol};

/// The exporter defaults, overridden by `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` /
/// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, `http/protobuf`), `OTEL_BSP_MAX_QUEUE_SIZE`,
/// `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`) and `OTEL_SERVICE_NAME` (which wins over a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), read through `lookup`.
pub fn otel_defaults(lookup: impl Fn(&str) -> Option<String>) -> Result<ExportConfig, ConfigError> {
    let mut config = ExportConfig::default();
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let bad = |var: &str, value: String, reason: &str| ConfigError::Value {
        origin: format!("{var}={value:?}"),
        message: reason.to_owned(),
    };
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = get(var) {
            config.protocol = match value.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                _ => return Err(bad(var, value, "expected grpc or http/protobuf")),
            };
            break;
        }
    }
    if let Some(value) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
        config.queue_size = match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(bad(
                    "OTEL_BSP_MAX_QUEUE_SIZE",
                    value,
                    "expected a positive integer",
                ))
            }
        };
    }
    if let Some(value) = get("OTEL_RESOURCE_ATTRIBUTES") {
        for entry in value.split(',') {
            let Some((key, val)) = entry.split_once('=') else {
                continue;
            };
            let (key, val) = (key.trim(), val.trim());
            if key.is_empty() {
                continue;
            }
            if key == "service.name" {
                val.clone_into(&mut config.service_name);
            } else {
                config
                    .resource_attributes
                    .push((key.to_owned(), val.to_owned()));
            }
        }
    }
    if let Some(value) = get("OTEL_SERVICE_NAME") {
        value.trim().clone_into(&mut config.service_name);
    }
    Ok(config)
}

impl OtlpSection {
    /// The exporter settings: the `OTEL_*` variables (through `lookup`), overridden by
    /// what this section sets. The section itself was validated when it was loaded.
    pub fn export_config_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ExportConfig, ConfigError> {
        let mut c = otel_defaults(lookup)?;
        c.otlp = self.enabled;
        if let Some(endpoint) = &self.endpoint {
            c.endpoint = Some(endpoint.clone());
        }
        if let Some(protocol) = self.protocol.as_deref().and_then(Protocol::from_name) {
            c.protocol = protocol;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn reads_the_otel_variables() {
        assert_eq!(otel_defaults(env(&[])).unwrap(), ExportConfig::default());

        let c = otel_defaults(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs, team = infra,bad,=x",
            ),
        ]))
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.queue_size, 100);
        assert_eq!(c.service_name, "from-attrs");
        assert_eq!(
            c.resource_attributes,
            [("team".to_owned(), "infra".to_owned())]
        );

        // OTEL_SERVICE_NAME wins; the traces-specific protocol wins over the general one.
        let c = otel_defaults(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "svc"),
        ]))
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.service_name, "svc");

        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ] {
            let err = otel_defaults(|name| (name == var).then(|| value.to_owned())).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{var}={value:?}: ")),
                "{err}"
            );
        }
    }
}
