//! The architecture as a test: within each crate (`strike-user`, and its parsers'
//! `strike-parse`) modules depend on each other in one direction (no cycles), read from the
//! sources' `use crate::…` paths (test modules left out); and the parsers' crate uses none
//! of tokio, aya, OpenTelemetry, axum or NVML, in its manifest or its code. That the parsers
//! depend on nothing above them, the crate boundary itself guarantees. A new import that
//! breaks the direction fails here, naming it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// What the parsers' crate must not use.
const FOREIGN: &[&str] = &["tokio", "aya", "opentelemetry", "axum", "nvml_wrapper"];

fn crate_dir(krate: &str) -> PathBuf {
    let user = Path::new(env!("CARGO_MANIFEST_DIR"));
    match krate {
        "strike-parse" => user.join("strike-parse"),
        _ => user.to_owned(),
    }
}

/// Module → the top-level modules its non-test code names through `crate::` (and
/// `extern:NAME` for a foreign crate it names).
fn graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = crate_dir(krate).join("src");
    let mut graph = BTreeMap::<String, BTreeSet<String>>::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
            if ["lib", "main"].contains(&top)
                || rel.ends_with("tests.rs")
                || rel.contains("/tests/")
            {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = graph.entry(top.to_owned()).or_default();
            deps.extend(crate_paths(code).into_iter().filter(|d| d != top));
            for foreign in FOREIGN {
                if code.contains(&format!("{foreign}::")) {
                    deps.insert(format!("extern:{foreign}"));
                }
            }
        }
    }
    graph
}

/// The first segment of every `crate::` path, braces expanded one level.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let (mut depth, mut end) = (1, 0);
            for (i, c) in inner.char_indices() {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in inner[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name = item.trim().split("::").next().unwrap_or("").trim();
                        if !name.is_empty() && name != "self" {
                            out.insert(name.to_owned());
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn modules_depend_on_each_other_in_one_direction() {
    for krate in ["strike-user", "strike-parse"] {
        println!("{krate}:");
        let graph = graph(krate);
        assert!(graph.len() > 5, "{krate}: too few modules read: {graph:?}");
        assert_no_cycles(krate, &graph);
    }
}

fn assert_no_cycles(krate: &str, graph: &BTreeMap<String, BTreeSet<String>>) {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                todo.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m, d)))
        .filter(|(m, d)| graph.contains_key(*d) && reaches(d, m))
        .map(|(m, d)| format!("{m} -> {d}"))
        .collect();
    for (m, deps) in graph {
        let deps: Vec<_> = deps.iter().cloned().collect();
        println!("  {m:10} -> {}", deps.join(", "));
    }
    assert!(cycles.is_empty(), "{krate}: dependency cycles: {cycles:?}");
}

#[test]
fn parsers_use_no_runtime_kernel_or_telemetry_crate() {
    let graph = graph("strike-parse");
    assert!(graph.contains_key("protocol") && graph.contains_key("llm"));
    let reaching: Vec<String> = graph
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m, d)))
        .filter(|(_, d)| d.starts_with("extern:"))
        .map(|(m, d)| format!("{m} -> {d}"))
        .collect();
    assert!(reaching.is_empty(), "the parsers reach out: {reaching:?}");
    let manifest = fs::read_to_string(crate_dir("strike-parse").join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("\n[").next().unwrap();
    for foreign in FOREIGN {
        let name = foreign.replace('_', "-");
        assert!(
            !deps
                .lines()
                .any(|l| l.trim_start().starts_with(name.as_str())),
            "strike-parse depends on {name}"
        );
    }
}
