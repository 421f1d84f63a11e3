//! Against a real OTLP collector (rotel), over gRPC and HTTP: what arrives on the wire.

use super::*;

/// Against a real collector, over both transports: `rotel` (`PyPI` `rotel`, which
/// `cargo xtask setup` installs and `cargo xtask test` names in `STRIKE_ROTEL_AGENT`) with
/// the repository's `tests/tools/rotel_jsonl_processor.py` writing what it receives as JSON
/// lines. Without `STRIKE_ROTEL_AGENT` it skips, except under `CI=true`.
#[test]
fn rotel_receives_spans_and_metrics_over_grpc_and_http() {
    let Ok(agent) = std::env::var("STRIKE_ROTEL_AGENT") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "STRIKE_ROTEL_AGENT is not set (cargo xtask test sets it)"
        );
        eprintln!("SKIP: STRIKE_ROTEL_AGENT is not set");
        return;
    };
    let (_rotel, grpc, http, sink) = start_rotel(&agent);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    for (protocol, port, id) in [
        (Protocol::Grpc, grpc, "rotel-grpc"),
        (Protocol::HttpProtobuf, http, "rotel-http"),
    ] {
        let config = ExportConfig {
            protocol,
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            service_name: format!("strike-{id}"),
            ..ExportConfig::default()
        };
        let exporter = Exporter::new(&config).unwrap();
        exporter.export(&RequestRecord {
            traceparent: Some(traceparent.clone()),
            request_id: id.to_owned(),
            ..record()
        });
        exporter.shutdown().unwrap();
        let stats = exporter.stats();
        assert_eq!(
            (stats.spans_exported, stats.spans_failed),
            (1, 0),
            "{protocol:?} {stats:?}"
        );
        assert_eq!(stats.metric_exports_failed, 0, "{protocol:?}");
    }

    let seen = read_sink(&sink);
    for id in ["rotel-grpc", "rotel-http"] {
        assert_rotel_saw(&seen, id, trace_id);
    }
}

/// Starts `rotel-agent` on two free ports; returns it (killed on drop), the gRPC and HTTP
/// ports and the sink file.
fn start_rotel(agent: &str) -> (Kill, u16, u16, std::path::PathBuf) {
    use std::{net::TcpListener, process::Command};

    let processor = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/tools/rotel_jsonl_processor.py"
    );
    let free_port = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (grpc, http) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("strike-rotel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("sink.jsonl");
    let _ = std::fs::remove_file(&sink);
    let child = Command::new(agent)
        .args(["start", "--exporter", "blackhole"])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--otlp-with-trace-processor", processor])
        .args(["--otlp-with-metrics-processor", processor])
        .env("ROTEL_SINK", &sink)
        .current_dir(&dir)
        .spawn()
        .expect("start rotel-agent");
    // Generous: each wait ends as soon as its condition holds.
    let wait_port = |port: u16| {
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rotel did not listen on {port}");
    };
    wait_port(grpc);
    wait_port(http);

    (Kill(child), grpc, http, sink)
}

/// A child process killed when dropped.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What rotel wrote to the sink, once both exports arrived (or after 60 s).
fn read_sink(sink: &std::path::Path) -> Vec<serde_json::Value> {
    let lines = |()| -> Vec<serde_json::Value> {
        std::fs::read_to_string(sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut seen = Vec::new();
    for _ in 0..600 {
        seen = lines(());
        let spans = seen.iter().filter(|v| v["type"] == "span").count();
        let durations = seen
            .iter()
            .filter(|v| v["name"] == "gen_ai.server.request.duration")
            .count();
        if spans >= 2 && durations >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// The span and duration metric of one export, as rotel received them.
fn assert_rotel_saw(seen: &[serde_json::Value], id: &str, trace_id: &str) {
    let span = seen
        .iter()
        .find(|v| v["type"] == "span" && v["attributes"]["strike.request_id"] == id)
        .unwrap_or_else(|| panic!("span {id} in {seen:#?}"));
    assert_eq!(span["name"], "chat tiny");
    assert_eq!(span["kind"], 2, "OTLP SPAN_KIND_SERVER");
    assert_eq!(span["trace_id"], trace_id);
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["start"].as_u64(), Some(START_UNIX_NS));
    assert_eq!(span["end"].as_u64(), Some(START_UNIX_NS + 1_250_250_003));
    assert_eq!(span["events"][0]["name"], "gen_ai.first_token");
    assert_eq!(
        span["events"][0]["t"].as_u64(),
        Some(START_UNIX_NS + 35_500_001)
    );
    assert_eq!(span["attributes"]["gen_ai.usage.input_tokens"], 12);
    assert_eq!(span["resource"]["service.name"], format!("strike-{id}"));
    let metric = seen
        .iter()
        .find(|v| {
            v["name"] == "gen_ai.server.request.duration"
                && v["resource"]["service.name"] == format!("strike-{id}")
        })
        .unwrap_or_else(|| panic!("duration metric of {id} in {seen:#?}"));
    assert_eq!(metric["unit"], "s");
    assert_eq!(metric["count"], 1);
    assert_eq!(
        metric["explicit_bounds"],
        serde_json::json!([
            0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
        ])
    );
}
