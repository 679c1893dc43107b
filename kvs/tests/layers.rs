//! The layers of `calm-kvs`, checked: every module of `src/` belongs to one layer, imports
//! only from its own layer or the layers below, and no two modules import each other
//! (directly or round a loop). The picture is in `kvs/README.md` ("Layers").
//!
//! Imports are read from the source: `crate::module` and `super::module` paths outside
//! comments and test code (`#[cfg(test)]` blocks and `tests.rs` files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module is named by its path under `src/` (its first segment for the
/// layer; `cluster::agent` is in `cluster`'s layer).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary: values, operations, the ring",
        &["value", "op", "ring", "hot_keys", "tasks"],
    ),
    ("storage and subscriptions", &["storage", "subscribe"]),
    (
        "sans-IO cores",
        &["policy", "metrics", "worker", "cluster", "coordinator"],
    ),
    (
        "messages, wire and errors",
        &[
            "service",
            "protocol",
            "wire",
            "cluster_file",
            "error",
            "acl",
            "tls",
        ],
    ),
    ("the sans-IO request path", &["request"]),
    (
        "shells: threads, sockets, clients",
        &[
            "node",
            "embedded",
            "store",
            "client",
            "cluster_client",
            "cluster_runtime",
            "server",
            "resp",
            "launch",
            "autoscale",
            "fault_proxy",
        ],
    ),
    (
        "harnesses: the fuzz targets' entry points (feature `fuzzing`)",
        &["fuzzing"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `cluster/agent.rs` → `cluster::agent`; `cluster/mod.rs` → `cluster`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The modules `code` names through `crate::` or `super::` (outside comments and tests).
fn imports(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (prefix, base) in [("crate::", None), ("super::", parent.as_deref())] {
            for (at, _) in line.match_indices(prefix) {
                // `crate::` inside a longer identifier (`calm_kvs::crate::`) never occurs;
                // a `super::` of a top-level module names the crate root.
                let rest = &line[at + prefix.len()..];
                let path: Vec<&str> = rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let full = |n: usize| {
                    let mut p: Vec<&str> = base.into_iter().collect();
                    if prefix == "crate::" {
                        p.clear();
                    }
                    p.extend(&path[..n]);
                    p.join("::")
                };
                for n in (1..=path.len().min(2)).rev() {
                    let m = full(n);
                    if known.contains(&m) {
                        if m != module {
                            out.insert(m);
                        }
                        break;
                    }
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap();
    LAYERS.iter().position(|(_, ms)| ms.contains(&top))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    files
        .iter()
        // The crate root, and unit tests kept in files of their own (`mod tests;`).
        .filter(|f| module_of(f) != "lib" && !module_of(f).ends_with("::tests"))
        .map(|f| {
            let m = module_of(f);
            let code = std::fs::read_to_string(f).unwrap();
            let deps = imports(&m, &code, &known);
            (m, deps)
        })
        .collect()
}

#[test]
fn every_module_is_in_a_layer() {
    let unplaced: Vec<String> = graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let mut upward = Vec::new();
    for (m, deps) in graph() {
        let Some(mine) = layer_of(&m) else { continue };
        for d in deps {
            if let Some(theirs) = layer_of(&d)
                && theirs > mine
            {
                upward.push(format!(
                    "{m} ({}) imports {d} ({})",
                    LAYERS[mine].0, LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn no_two_modules_import_each_other() {
    // Between top-level modules (a folder counts as one), and between the files of a folder.
    let g = graph();
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in &g {
        for d in deps {
            if top(d) != top(m) {
                tops.entry(top(m)).or_default().insert(top(d));
            }
        }
    }
    let inner: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(m, deps)| {
            let same: BTreeSet<String> = deps
                .iter()
                .filter(|d| top(d) == top(m) && d.contains("::") && m.contains("::"))
                .cloned()
                .collect();
            (m.clone(), same)
        })
        .collect();
    for edges in [tops, inner] {
        let reaches = |from: &str, to: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.to_string()];
            while let Some(n) = stack.pop() {
                for next in edges.get(&n).into_iter().flatten() {
                    if next == to {
                        return true;
                    }
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
            false
        };
        let cycles: Vec<String> = edges
            .iter()
            .flat_map(|(a, ds)| ds.iter().map(move |b| (a.clone(), b.clone())))
            .filter(|(a, b)| reaches(b, a))
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect();
        assert!(
            cycles.is_empty(),
            "imports in a loop:\n{}",
            cycles.join("\n")
        );
    }
}

#[test]
fn the_checker_sees_imports() {
    // The checks above are only as good as the reading of imports.
    let known: BTreeSet<String> = ["op", "value", "cluster", "cluster::agent", "cluster::view"]
        .into_iter()
        .map(String::from)
        .collect();
    let code = "use crate::value::{Kind, Value};\n// use crate::cluster::agent;\n\
                use super::agent::ClusterAgent;\nfn f() { crate::op::Op::get(\"k\"); }\n\
                #[cfg(test)]\nmod test { use crate::cluster; }\n";
    let got = imports("cluster::view", code, &known);
    let want: BTreeSet<String> = ["value", "cluster::agent", "op"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}
