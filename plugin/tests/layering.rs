//! The plugin's rooms and their walls, checked from the source.
//!
//! Every top-level module of `plugin/src` (a file, or a folder with its files) is a node; a
//! `crate::x` path in code (a `use` or a path in an expression or type) is an arrow to `x`;
//! `lib.rs` has an arrow to every module it declares, so a module reaching back to an item of
//! `lib.rs` closes a cycle too. Comments and string literals are not code. The checks:
//!
//! * the arrows form no cycle;
//! * `audio/` (the realtime path) reaches only `crate::layout` and itself, and from outside
//!   the crate only `std`/`core` and the engine's published reader (`ezaudio_engine::audio::published`).
//!
//! The analysis is tested on made-up sources too, so a check that could never fail is noticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file: its path relative to `src/` (with `/`), and its text.
type Source = (String, String);

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.push((rel.replace('\\', "/"), text));
        }
    }
}

fn plugin_sources() -> Vec<Source> {
    let mut out = Vec::new();
    read_tree(&src_dir(), &src_dir(), &mut out);
    // `main.rs` is the standalone binary: a crate of its own.
    out.retain(|(rel, _)| rel != "main.rs");
    out
}

/// The code of `text` with comments and the contents of string and char literals blanked.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let prev = if i == 0 { '\0' } else { c[i - 1] };
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && !is_ident(prev) && matches!(at(i + 1), '"' | '#') {
            // A raw string r"..." or r#"..."# (or an identifier starting with r).
            let mut j = i + 1;
            while at(j) == '#' {
                j += 1;
            }
            let hashes = j - i - 1;
            if at(j) != '"' {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#')) {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (at(i + 2) == '\'' || at(i + 1) == '\\') {
            // A char literal ('x', '\n', '\'', '\u{..}'); otherwise a lifetime.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The identifier at the start of `s` (after whitespace), if any.
fn ident_at(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let end = s.find(|ch: char| !is_ident(ch)).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The first segments named after `prefix::` in `code`: `crate::a::b` gives `a`,
/// `crate::{a::x, b}` gives `a` and `b`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        let before = code[..at].chars().next_back().unwrap_or(' ');
        if is_ident(before) || before == ':' {
            continue; // `my_crate::` or `a::crate::`: not this prefix
        }
        let tail = code[from..].trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            // Top-level items of the group.
            let (mut depth, mut item_start, mut items) = (0i32, 0usize, Vec::new());
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[item_start..k]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[item_start..k]);
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
            found.extend(items.into_iter().filter_map(ident_at).map(str::to_string));
        } else if let Some(name) = ident_at(tail) {
            found.push(name.to_string());
        }
    }
    found
}

/// The node of a file: its top-level module, or `lib` for the crate root.
fn node_of(rel: &str) -> String {
    match rel.split_once('/') {
        Some((folder, _)) => folder.to_string(),
        None if rel == "lib.rs" => "lib".to_string(),
        None => rel.trim_end_matches(".rs").to_string(),
    }
}

/// Arrows between nodes, each with the files that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn module_graph(sources: &[Source]) -> Graph {
    let nodes: BTreeSet<String> = sources.iter().map(|(rel, _)| node_of(rel)).collect();
    let mut graph: Graph = nodes.iter().map(|n| (n.clone(), BTreeMap::new())).collect();
    for (rel, text) in sources {
        let from = node_of(rel);
        let code = code_only(text);
        let mut targets = paths_after(&code, "crate::");
        if from == "lib" {
            // The root declares every module: it depends on all of them.
            targets.extend(
                code.lines()
                    .filter_map(|l| {
                        let l = l.trim_start();
                        let l = l.strip_prefix("pub ").unwrap_or(l);
                        l.strip_prefix("mod ")
                    })
                    .filter_map(ident_at)
                    .map(str::to_string),
            );
        }
        for target in targets {
            // Anything but a module is an item of the crate root.
            let to = if nodes.contains(&target) && target != "lib" {
                target
            } else {
                "lib".to_string()
            };
            if to != from {
                graph
                    .get_mut(&from)
                    .unwrap()
                    .entry(to)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    graph
}

/// A cycle of the graph (`[a, b, ..., a]`), if it has one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flat_map(|e| e.keys()) {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[i..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn describe(cycle: &[String], graph: &Graph) -> String {
    cycle
        .windows(2)
        .map(|w| {
            let files: Vec<_> = graph[&w[0]][&w[1]].iter().cloned().collect();
            format!("{} -> {} ({})", w[0], w[1], files.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a file of `audio/` reaches that it must not: `crate::` modules other than `layout` and
/// `audio`, `super::` beyond `audio/`, and outside crates other than std, core and the
/// engine's published reader.
fn audio_violations(sources: &[Source]) -> Vec<String> {
    let mut bad = Vec::new();
    for (rel, text) in sources.iter().filter(|(rel, _)| rel.starts_with("audio/")) {
        let code = code_only(text);
        for m in paths_after(&code, "crate::") {
            if m != "layout" && m != "audio" {
                bad.push(format!("{rel}: crate::{m}"));
            }
        }
        // `super::super::` from audio/x.rs leaves the room (audio/mod.rs: `super::` does).
        let leaves = if rel == "audio/mod.rs" {
            "super::"
        } else {
            "super::super::"
        };
        if !paths_after(&code, leaves).is_empty() {
            bad.push(format!("{rel}: {leaves}"));
        }
        for m in paths_after(&code, "ezaudio_engine::") {
            if m != "audio" {
                bad.push(format!("{rel}: ezaudio_engine::{m}"));
            }
        }
        for m in paths_after(&code, "ezaudio_engine::audio::") {
            if m != "published" {
                bad.push(format!("{rel}: ezaudio_engine::audio::{m}"));
            }
        }
        // Other crates: every `use` must start at std, core, crate, super, self or the engine.
        let mut from = 0;
        while let Some(pos) = code[from..].find("use ") {
            let at = from + pos;
            from = at + 4;
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let root = ident_at(code[from..].trim_start().trim_start_matches("::")).unwrap_or("");
            if !["std", "core", "crate", "super", "self", "ezaudio_engine"].contains(&root) {
                bad.push(format!("{rel}: use {root}"));
            }
        }
    }
    bad
}

#[test]
fn the_plugin_modules_form_no_cycle() {
    let sources = plugin_sources();
    let graph = module_graph(&sources);
    // The scan sees the rooms and their arrows (an empty scan would pass vacuously).
    for room in [
        "lib",
        "audio",
        "editor",
        "generation",
        "jobs",
        "layout",
        "shared",
        "state",
        "status",
        "store",
    ] {
        assert!(graph.contains_key(room), "no {room} in {:?}", graph.keys());
    }
    assert!(graph["editor"].contains_key("generation"));
    assert!(graph["generation"].contains_key("jobs"));
    assert!(graph["store"].contains_key("state"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", describe(&cycle, &graph));
    }
}

#[test]
fn the_audio_room_reaches_only_the_layout_and_the_published_reader() {
    let sources = plugin_sources();
    assert!(
        sources
            .iter()
            .filter(|(r, _)| r.starts_with("audio/"))
            .count()
            >= 3,
        "audio/ not found"
    );
    let bad = audio_violations(&sources);
    assert!(bad.is_empty(), "audio/ reaches beyond its walls: {bad:?}");
    let graph = module_graph(&sources);
    let reached: Vec<_> = graph["audio"].keys().cloned().collect();
    assert_eq!(reached, vec!["layout".to_string()]);
}

fn fake(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

#[test]
fn the_checks_catch_cycles_and_breaches() {
    // A cycle through a use and a path in code.
    let g = module_graph(&fake(&[
        ("lib.rs", "pub mod a;\nmod b;"),
        ("a.rs", "use crate::{layout::X, b::Y};"),
        ("b/mod.rs", "fn f() { crate::a::g(); }"),
        ("layout.rs", ""),
    ]));
    let cycle = find_cycle(&g).expect("a <-> b is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"a".to_string()) && cycle.contains(&"b".to_string()));
    // Reaching back to an item of lib.rs closes a cycle with the root.
    let g = module_graph(&fake(&[
        ("lib.rs", "pub mod a;"),
        ("a.rs", "use crate::Thing;"),
    ]));
    assert!(find_cycle(&g).is_some());
    // Comments and strings are not code.
    let g = module_graph(&fake(&[
        ("lib.rs", "pub mod a;\npub mod b;"),
        (
            "a.rs",
            "//! see [`crate::b`]\n/* crate::b */ const S: &str = \"crate::b\"; const R: &str = r#\"crate::b\"#; const C: char = '\"';",
        ),
        ("b.rs", "use crate::a::S; fn f<'a>(x: &'a str) {}"),
    ]));
    assert_eq!(find_cycle(&g), None, "{g:?}");
    assert!(!g["a"].contains_key("b"));
    // The audio wall.
    let bad = audio_violations(&fake(&[
        (
            "audio/voices.rs",
            "use crate::layout::PAD_COUNT;\nuse crate::store::PadStore;\nuse parking_lot::Mutex;",
        ),
        (
            "audio/voice.rs",
            "use ezaudio_engine::audio::published::PlaybackHandle;\nfn f() { ezaudio_engine::audio::resample(); super::super::shared::x(); }",
        ),
    ]));
    assert_eq!(
        bad,
        vec![
            "audio/voices.rs: crate::store",
            "audio/voices.rs: use parking_lot",
            "audio/voice.rs: super::super::",
            "audio/voice.rs: ezaudio_engine::audio::resample",
        ]
    );
}
