//! Golden replay tests: real captures recorded with `strike trace --record` against real
//! servers (llama.cpp's llama-server, a uvicorn OpenAI-compatible app) are replayed through
//! the whole userspace pipeline (decode → stream → protocol → llm → tokens), and the records
//! must equal `expected.jsonl` beside each capture. `STRIKE_BLESS=1` rewrites the expected
//! files; read the diff: those files are the specification.
//!
//! Each capture's README line says what was sent; the expected token counts were checked
//! against the servers' own responses when recorded.

use std::{fs, path::Path};

use serde_json::Value;

fn normalise(mut v: Value) -> Value {
    if let Some(id) = v.get_mut("request_id") {
        let s = id.as_str().unwrap_or_default();
        assert_eq!(
            uuid::Uuid::parse_str(s).map(|u| u.get_version_num()).ok(),
            Some(7),
            "request_id is a uuid v7: {s}"
        );
        *id = Value::String("<uuid-v7>".into());
    }
    v
}

fn check(dir: &Path) {
    let (records, summary) =
        strike::cli::replay::replay_file(&dir.join("capture.strikecap")).unwrap();
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| normalise(serde_json::to_value(r).unwrap()).to_string())
        .collect();
    lines.push(
        serde_json::json!({ "stream": summary.stream, "tracker": summary.tracker }).to_string(),
    );
    let actual = lines.join("\n") + "\n";
    let expected_path = dir.join("expected.jsonl");
    if std::env::var_os("STRIKE_BLESS").is_some() {
        fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with STRIKE_BLESS=1 to create it)",
            expected_path.display()
        )
    });
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "{}: line {} differs", dir.display(), i + 1);
    }
    assert_eq!(
        actual.lines().count(),
        expected.lines().count(),
        "{}: number of lines differs",
        dir.display()
    );
}

#[test]
fn replays_real_captures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replay");
    let mut dirs: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "golden captures present");
    for dir in dirs {
        check(&dir);
    }
}
