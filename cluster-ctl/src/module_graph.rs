//! The crate's modules must not import each other in a circle: a circle means neither side can be
//! understood, tested or changed without the other. This test reads the sources and fails on any
//! circle between top-level modules, naming the `use` lines that close it. A module and its own
//! submodules (`super::`) are one node.
//!
//! It also holds the error style of the layers (ARCHITECTURE.md): the modules below the side
//! effects return typed errors (thiserror) that name what failed, and only the layers above
//! them (resources, services, the daemon and the commands) collect those with anyhow.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Top-level module → (used module → the first `file:line` that uses it).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            // The binaries sit on top of the library; they are not its modules.
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`daemon/startup.rs` → `daemon`).
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).expect("under src");
    let first = relative
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Identifiers that follow `crate::`, and the top-level items of `use crate::{…}` groups.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_group = false;
    let mut depth = 0usize;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                in_group = true;
                depth = 1;
                collect_group(group, number, &mut in_group, &mut depth, &mut found);
                rest = "";
                break;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
        if in_group && rest == line {
            collect_group(line, number, &mut in_group, &mut depth, &mut found);
        }
    }
    found
}

/// Reads the items of a `use crate::{…}` group at brace depth 1 (`a::b` counts as `a`).
fn collect_group(
    text: &str,
    number: usize,
    in_group: &mut bool,
    depth: &mut usize,
    found: &mut Vec<(usize, String)>,
) {
    let mut item = String::new();
    let take = |item: &mut String, found: &mut Vec<(usize, String)>| {
        let name = item
            .trim()
            .split("::")
            .next()
            .unwrap_or_default()
            .to_owned();
        if !name.is_empty() && name != "self" {
            found.push((number + 1, name));
        }
        item.clear();
    };
    for c in text.chars() {
        match c {
            '{' => *depth += 1,
            '}' => {
                if *depth == 1 {
                    take(&mut item, found);
                    *in_group = false;
                    return;
                }
                *depth -= 1;
            }
            ',' if *depth == 1 => take(&mut item, found),
            _ if *depth == 1 => item.push(c),
            _ => {}
        }
    }
    if *depth == 1 {
        take(&mut item, found);
    }
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&root, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let from = module_of(&root, file);
        let text = fs::read_to_string(file).expect("readable source");
        for (line, to) in uses(&text) {
            if to != from && modules.contains(&to) {
                let shown = file.strip_prefix(&root).expect("under src").display();
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("src/{shown}:{line}"));
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one: the modules in order.
fn circle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    fn walk(
        graph: &Graph,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let last = path.last().expect("non-empty").clone();
        for next in graph.get(&last).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(graph, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_two_modules_import_each_other_in_a_circle() {
    let graph = graph();
    assert!(
        graph.values().map(BTreeMap::len).sum::<usize>() > 10,
        "the reader found almost no imports: {graph:#?}"
    );
    for start in graph.keys() {
        if let Some(circle) = circle_from(&graph, start) {
            let edges: Vec<String> = circle
                .iter()
                .zip(circle.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} → {b} ({})", graph[a][b]))
                .collect();
            panic!(
                "modules import each other in a circle:\n  {}",
                edges.join("\n  ")
            );
        }
    }
}

/// Layers 1–3 of ARCHITECTURE.md: plain data and files, the kernel interfaces, views and wire.
const TYPED_ERROR_MODULES: &[&str] = &[
    "config",
    "private",
    "mapped",
    "address_table",
    "incarnation",
    "arp_guard",
    "netif",
    "nft",
    "sync",
    "dataplane",
    "catalog",
    "status",
    "heartbeat",
];

#[test]
fn the_lower_layers_return_typed_errors_not_anyhow_or_strings() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files = Vec::new();
    sources(root, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let module = module_of(root, file);
        if module == "module_graph" {
            continue;
        }
        let text = fs::read_to_string(file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let stringly = code.contains(", String>") && code.contains("Result<");
            let anyhow = TYPED_ERROR_MODULES.contains(&module.as_str()) && code.contains("anyhow");
            if stringly || anyhow {
                found.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "an error without a type (a String, or anyhow below the side-effect layer):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_reader_sees_grouped_and_inline_uses() {
    let text = "use crate::{\n    config::Config,\n    engine::{Event, GroupId},\n};\nfn f() { crate::netif::fip_interface(); } // crate::ignored\n";
    let names: Vec<String> = uses(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["config", "engine", "netif"]);
}
