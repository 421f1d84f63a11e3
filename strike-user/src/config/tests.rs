use super::{loader::SETTINGS, *};
use crate::export::Protocol;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn load(file: &str, vars: &[(&str, &str)], flags: &[(&str, &'static str, &str)]) -> RunConfig {
    try_load(file, vars, flags).unwrap()
}

fn try_load(
    file: &str,
    vars: &[(&str, &str)],
    flags: &[(&str, &'static str, &str)],
) -> Result<RunConfig, ConfigError> {
    let mut loader = ConfigLoader::default()
        .file("strike.yaml", file.to_owned())
        .env(vars.iter().map(|(k, _)| *k), env(vars))?;
    for (flag, path, value) in flags {
        loader = loader.flag(flag, path, (*value).to_owned());
    }
    loader.load()
}

const FILE: &str = "
targets:
  ports: [8000]
  comms: [vllm]
otlp:
  endpoint: http://collector:4317
  headers: {x-api-key: secret}
  resource_attributes: {deployment.environment: prod}
server:
  listen: 127.0.0.1:9999
";

#[test]
fn layers_override_in_order_file_env_flags() {
    let c = load(FILE, &[], &[]);
    assert_eq!(c.targets.ports, [8000]);
    assert_eq!(c.targets.comms, ["vllm"]);
    assert!(
        c.targets.follow_children,
        "defaults survive a partial section"
    );
    assert_eq!(c.otlp.endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(c.capture.ring_mib, 16);
    assert_eq!(c.capture.buffers_mib, 256);
    // The stages' own defaults, a quarter and three quarters of it.
    assert_eq!(
        c.buffer_budgets(),
        (
            crate::stream::DEFAULT_MAX_BUFFERED_BYTES,
            crate::llm::DEFAULT_MAX_BUFFERED_BYTES
        )
    );

    let vars = [
        ("STRIKE_TARGETS_PORTS", "8001, 8002"),
        ("STRIKE_OTLP_ENDPOINT", "http://env:4317"),
        ("STRIKE_OTLP_HEADERS", "a=1,b = 2"),
        ("STRIKE_TARGETS_FOLLOW_CHILDREN", "false"),
        ("STRIKE_SERVER_LISTEN", "0.0.0.0:9464"),
        ("STRIKE_BIN", "ignored: not a setting section"),
    ];
    let c = load(FILE, &vars, &[]);
    assert_eq!(c.targets.ports, [8001, 8002]);
    assert_eq!(c.targets.comms, ["vllm"], "untouched by the environment");
    assert!(!c.targets.follow_children);
    assert_eq!(c.otlp.endpoint.as_deref(), Some("http://env:4317"));
    assert_eq!(
        c.otlp.headers.iter().collect::<Vec<_>>(),
        [
            (&"a".to_owned(), &"1".to_owned()),
            (&"b".to_owned(), &"2".to_owned())
        ]
    );
    assert_eq!(c.server.listen.as_deref(), Some("0.0.0.0:9464"));

    let c = load(
        FILE,
        &vars,
        &[
            ("--port", "targets.ports", "9000"),
            ("--otlp-endpoint", "otlp.endpoint", "http://flag:4317"),
            ("--listen", "server.listen", "none"),
        ],
    );
    assert_eq!(c.targets.ports, [9000]);
    assert_eq!(c.otlp.endpoint.as_deref(), Some("http://flag:4317"));
    assert_eq!(c.server.listen, None, "`none` disables the endpoint");
}

#[test]
fn errors_name_their_origin() {
    let e = try_load("targets:\n  ports: [8000]\n  bogus: 1\n", &[], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("config file strike.yaml:"), "{msg}");
    assert!(msg.contains("bogus") && msg.contains("line 3"), "{msg}");

    let e = try_load("targets: {ports: [99999]}", &[], &[]).unwrap_err();
    assert!(e.to_string().contains("strike.yaml"), "{e}");

    let e = try_load(FILE, &[("STRIKE_CAPTURE_RING_MIB", "lots")], &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("STRIKE_CAPTURE_RING_MIB=\"lots\":"),
        "{e}"
    );
    let e = try_load(FILE, &[("STRIKE_OTLP_ENDPIONT", "x")], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownVariable { .. }), "{e}");
    assert!(e.to_string().contains("STRIKE_OTLP_ENDPOINT"), "{e}");

    let e = try_load(FILE, &[], &[("--port", "targets.ports", "http")]).unwrap_err();
    assert!(e.to_string().starts_with("--port=\"http\":"), "{e}");
}

#[test]
fn validation_rejects_what_types_allow() {
    for (file, want) in [
        ("capture: {ring_mib: 3}\ntargets: {ports: [1]}", "ring_mib"),
        ("capture: {buffers_mib: 1}\ntargets: {ports: [1]}", "buffers_mib"),
        (
            "capture: {max_capture_bytes: 0}\ntargets: {ports: [1]}",
            "max_capture_bytes",
        ),
        ("targets: {}", "say what to trace"),
        ("targets: {comms: [a-name-longer-than-15]}", "1 to 15 bytes"),
        ("targets: {containers: [abc]}", "container id"),
        ("targets: {cgroups: ['']}", "every process"),
        (
            "targets: {ports: [1]}\nserver: {listen: 'nowhere'}",
            "server.listen",
        ),
        (
            "targets: {ports: [1]}\notlp: {protocol: http/json}",
            "otlp.protocol",
        ),
        ("targets: {ports: [1]}\notlp: {timeout_s: -1}", "timeout_s"),
        ("targets: {ports: [1]}\notlp: {queue_size: 0}", "queue_size"),
        ("targets: {ports: [1]}\noutput: {records: yaml}", "records"),
        ("targets: {ports: [1]}\ncost: {pue: 0.5}", "cost.pue"),
        (
            "targets: {ports: [1]}\ncost: {energy_price_per_kwh: -1}",
            "cost.energy_price_per_kwh must be a non-negative",
        ),
        (
            "targets: {ports: [1]}\ncost: {prefill_weight: 0, decode_weight: 0}",
            "cannot both be 0",
        ),
        (
            "targets: {ports: [1]}\ncost: {tenant_header: 'bad header'}",
            "not a header name",
        ),
        (
            "targets: {ports: [1]}\ncost: {gpu_price_per_hour: {H100: -2}}",
            "cost.gpu_price_per_hour.H100 must be a non-negative",
        ),
        (
            "targets: {ports: [1]}\ncost: {token_prices: {input_per_mtok: 1, output_per_mtok: 1, tiers: [{min_prompt_tokens: 9, input_per_mtok: -1, output_per_mtok: 1}]}}",
            "cost.token_prices.tiers.input_per_mtok",
        ),
        (
            "targets: {ports: [1]}\ngpu: {sample_interval_ms: 1}",
            "sample_interval_ms",
        ),
    ] {
        let e = try_load(file, &[], &[]).unwrap_err();
        assert!(e.to_string().contains(want), "{file}: {e}");
    }
    // An empty file is the defaults.
    let e = try_load("", &[], &[]).unwrap_err();
    assert!(e.to_string().contains("say what to trace"), "{e}");
}

#[test]
fn otlp_settings_fall_back_to_otel_variables() {
    let c = load("targets: {ports: [1]}", &[], &[]);
    let otel = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "from-otel"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=infra,deployment.environment=dev",
        ),
    ];
    let e = c.otlp.export_config_with(env(&otel)).unwrap();
    assert_eq!(e.protocol, Protocol::HttpProtobuf);
    assert_eq!(e.service_name, "from-otel");
    assert_eq!(
        e.endpoint, None,
        "left to OTEL_EXPORTER_OTLP_ENDPOINT in the SDK"
    );

    // Strike's own settings win over OTEL_*, attribute by attribute.
    let c = load(FILE, &[("STRIKE_OTLP_PROTOCOL", "grpc")], &[]);
    let e = c.otlp.export_config_with(env(&otel)).unwrap();
    assert_eq!(e.protocol, Protocol::Grpc);
    assert_eq!(e.endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(
        e.resource_attributes,
        [
            ("team".to_owned(), "infra".to_owned()),
            ("deployment.environment".to_owned(), "prod".to_owned())
        ]
    );
    assert_eq!(e.headers, [("x-api-key".to_owned(), "secret".to_owned())]);
}

#[test]
fn cost_settings_from_file_and_environment() {
    let file = "targets: {ports: [1]}\ncost:\n  gpu_price_per_hour: {H100: 2.5}\n  token_prices: {input_per_mtok: 0.5, output_per_mtok: 1.5}\n";
    let c = load(
        file,
        &[
            ("STRIKE_COST_GPU_PRICE_PER_HOUR", "H100=3, A100=1.25"),
            ("STRIKE_COST_PUE", "1.4"),
            ("STRIKE_COST_TENANT_HEADER", "x-tenant"),
            ("STRIKE_GPU_ENABLED", "false"),
        ],
        &[],
    );
    assert_eq!(c.cost.gpu_price_per_hour.get("A100"), Some(&1.25));
    assert_eq!(c.cost.gpu_price_per_hour.get("H100"), Some(&3.0));
    assert!((c.cost.pue - 1.4).abs() < 1e-12);
    assert_eq!(c.cost.tenant_header.as_deref(), Some("x-tenant"));
    assert_eq!(
        c.cost.token_prices.as_ref().map(|t| t.output_per_mtok),
        Some(1.5)
    );
    assert_eq!(c.gpu.enabled, Some(false));
    let e = try_load(
        file,
        &[("STRIKE_COST_GPU_PRICE_PER_HOUR", "H100=cheap")],
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("STRIKE_COST_GPU_PRICE_PER_HOUR="),
        "{e}"
    );
}

#[test]
fn printed_config_round_trips_without_credentials() {
    let c = load(FILE, &[], &[]);
    let yaml = c.to_redacted_yaml();
    assert!(!yaml.contains("secret"), "{yaml}");
    assert!(yaml.contains("x-api-key: <redacted>"), "{yaml}");
    let back: RunConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(back.targets, c.targets);
    assert_eq!(back.server, c.server);
}

#[test]
fn every_setting_has_a_variable_and_a_place_in_the_tree() {
    let tree = serde_yaml_ng::to_value(RunConfig::default()).unwrap();
    for (path, _) in SETTINGS {
        let (section, key) = path.split_once('.').unwrap();
        assert!(
            tree.get(section).and_then(|s| s.get(key)).is_some(),
            "{path} is not a field"
        );
    }
    let fields: usize = tree
        .as_mapping()
        .unwrap()
        .values()
        .map(|s| s.as_mapping().unwrap().len())
        .sum();
    assert_eq!(
        fields,
        SETTINGS.len() + FILE_ONLY_SETTINGS.len(),
        "a field has no variable"
    );
    assert!(variable_names().contains(&"STRIKE_TARGETS_CGROUPS".to_owned()));
}

#[test]
fn a_value_that_fails_validation_is_reported_with_its_origin() {
    // The same bad value from each layer: the message names the layer that gave it.
    let e = try_load("targets: {ports: [1]}\ncapture: {ring_mib: 3}", &[], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config file strike.yaml, capture.ring_mib: capture.ring_mib must be a power of two up \
         to 1024, got 3"
    );
    let e = try_load(FILE, &[("STRIKE_CAPTURE_RING_MIB", "3")], &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("STRIKE_CAPTURE_RING_MIB=\"3\": capture.ring_mib must"),
        "{e}"
    );
    let e = try_load(
        FILE,
        &[("STRIKE_CAPTURE_RING_MIB", "3")],
        &[("--ring-mib", "capture.ring_mib", "5")],
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("--ring-mib=\"5\": "),
        "the last layer is at fault: {e}"
    );
    // A flag that repairs a bad lower layer wins.
    let c = load(
        FILE,
        &[("STRIKE_CAPTURE_RING_MIB", "3")],
        &[("--ring-mib", "capture.ring_mib", "4")],
    );
    assert_eq!(c.capture.ring_mib, 4);
    // A nested value is charged to the setting that holds it.
    let e = try_load(
        "targets: {ports: [1]}\ncost: {gpu_price_per_hour: {H100: -2}}",
        &[],
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("config file strike.yaml, cost.gpu_price_per_hour: "),
        "{e}"
    );
    let e = try_load(FILE, &[], &[("--container", "targets.containers", "abc")]).unwrap_err();
    assert!(
        e.to_string().starts_with("--container=\"abc\": container"),
        "{e}"
    );
    // A check of the whole selection names no single origin.
    let e = try_load("", &[], &[]).unwrap_err();
    assert!(e.to_string().starts_with("say what to trace"), "{e}");
}

#[test]
fn a_command_that_traces_nothing_needs_no_targets() {
    let loader = ConfigLoader::default()
        .file("strike.yaml", "cost: {pue: 1.2}".to_owned())
        .without_targets();
    let c = loader.load().unwrap();
    assert!((c.cost.pue - 1.2).abs() < 1e-12);
    let bad = ConfigLoader::default()
        .file("strike.yaml", "cost: {pue: 0.2}".to_owned())
        .without_targets();
    assert!(bad.load().unwrap_err().to_string().contains("cost.pue"));
}
