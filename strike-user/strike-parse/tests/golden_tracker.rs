//! Golden tests of the `RequestTracker`: each directory under `tests/golden/tracker/` holds a
//! `scenario.txt` (format: `tests/common/mod.rs`) and the `expected.jsonl` it must produce:
//! one record per line (`request_id` replaced by "<uuid-v7>"), then `{"stats": ...}`.
//! `STRIKE_BLESS=1 cargo test --test golden_tracker` rewrites the expected files.

mod common;

use std::path::Path;

use strike_parse::llm::RequestTracker;

fn run(dir: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(dir.join("scenario.txt")).map_err(|e| e.to_string())?;
    let scenario = common::parse(&text)?;
    let mut tracker = RequestTracker::new(scenario.config);
    let mut out = Vec::new();
    for step in scenario.steps {
        match step {
            common::Step::Event(ev) => tracker.handle(ev, &mut out),
            common::Step::Evict(now) => tracker.evict_idle(now, &mut out),
        }
    }
    tracker.finish(&mut out);
    let mut lines = String::new();
    for record in &out {
        let id = uuid::Uuid::parse_str(&record.request_id).map_err(|e| e.to_string())?;
        if id.get_version_num() != 7 {
            return Err(format!("request_id {id} is not a v7 uuid"));
        }
        let mut value = serde_json::to_value(record).map_err(|e| e.to_string())?;
        value["request_id"] = serde_json::Value::from("<uuid-v7>");
        lines.push_str(&serde_json::to_string(&value).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    let stats = serde_json::json!({ "stats": tracker.stats() });
    lines.push_str(&serde_json::to_string(&stats).map_err(|e| e.to_string())?);
    lines.push('\n');
    Ok(lines)
}

#[test]
fn golden_tracker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tracker");
    let bless = std::env::var_os("STRIKE_BLESS").is_some_and(|v| v == "1");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("scenario.txt").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no scenarios under {}", root.display());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let actual = match run(dir) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let expected_path = dir.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}: output differs (STRIKE_BLESS=1 to accept)\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
