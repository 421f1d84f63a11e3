//! The architecture as a test: the modules of `strike-user` depend on each other in one
//! direction (no cycles), and the I/O-free parsers depend on no stage above them and on
//! none of tokio, aya or OpenTelemetry. Read from the sources' `use crate::…` paths (test
//! modules left out), so a new import that breaks the direction fails here, naming it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// The I/O-free parsers, and what they may use.
const PARSERS: &[&str] = &[
    "event", "conn", "stream", "protocol", "llm", "tokens", "record", "num", "clock",
];
const FOREIGN: &[&str] = &["tokio", "aya", "opentelemetry", "axum", "nvml_wrapper"];

/// Module → the top-level modules its non-test code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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
    let graph = graph();
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
    for (m, deps) in &graph {
        println!(
            "{m:10} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(cycles.is_empty(), "dependency cycles: {cycles:?}");
}

#[test]
fn parsers_stand_apart_from_the_session() {
    let graph = graph();
    let mut wrong = Vec::new();
    for parser in PARSERS {
        for dep in graph.get(*parser).into_iter().flatten() {
            if !PARSERS.contains(&dep.as_str()) {
                wrong.push(format!("{parser} -> {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "parsers depending outside the parsers: {wrong:?}"
    );
}
