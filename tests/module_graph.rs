//! The module graph of `src/` has no cycles (docs/architecture.md).
//!
//! A text scan, not a compiler pass: every `.rs` file under `src/` (but `lib.rs` and `main.rs`)
//! is read with its comments and string and char literals blanked out, and each path that
//! starts with `crate::`, `super::`, `self::` or the name of a child module (`door::x` in
//! `server`), including each leaf of a `use` group such as `use crate::{a, b::{c, d}}`, is
//! resolved against the module it is written in (inline `mod x
//! { .. }` blocks counted). The nodes are the top-level modules of the crate and the
//! submodules of `server` (the doors, which sit on everything else); a path from one node into
//! another is an edge. Code under `#[cfg(test)]` (test modules, inline or in their own files)
//! counts like any other: a test that needs an upper layer belongs to that layer or to
//! `tests/`. Paths through the `streamgate::` crate name, macros and re-exports are not seen:
//! the crate never names itself, and a re-export is itself a `crate::` path in its module.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One place a module names another.
#[derive(Debug, Clone)]
struct Witness {
    file: String,
    line: usize,
    path: String,
}

/// Nodes and edges (with the first place each edge is written).
#[derive(Debug, Default)]
struct Graph {
    nodes: BTreeSet<String>,
    edges: BTreeMap<(String, String), Witness>,
}

/// The source with comments, string literals and char literals replaced by spaces (newlines
/// kept, so line numbers hold).
fn blank(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            wipe(&mut out, i, end);
            i = end;
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0usize;
            let start = i;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            wipe(&mut out, start, i);
        } else if (c == b'r' || c == b'b') && is_raw_string_start(b, i) {
            let start = i;
            while b[i] != b'r' {
                i += 1;
            }
            i += 1;
            let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
            i += hashes + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i = (i + close.len()).min(b.len());
            wipe(&mut out, start, i);
        } else if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            wipe(&mut out, start, i);
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{7f}', '{') or a lifetime ('a, 'static).
            let start = i;
            if next == Some(b'\\') {
                // Past the escaped character, which may itself be a quote ('\'').
                i += 3;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                wipe(&mut out, start, i);
            } else if let Some(len) = src[i + 1..].chars().next().map(char::len_utf8) {
                if b.get(i + 1 + len) == Some(&b'\'') {
                    i += len + 2;
                    wipe(&mut out, start, i);
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else if is_ident_byte(c) {
            // Skip whole identifiers so the `r`/`b` of `for`/`sub"` is never a string prefix.
            // b"..." and b'x' are then read as a literal on the next round.
            while i < b.len() && is_ident_byte(b[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br"`, `br#"` at `i`, not inside an identifier.
fn is_raw_string_start(b: &[u8], i: usize) -> bool {
    if i > 0 && is_ident_byte(b[i - 1]) {
        return false;
    }
    let mut j = i;
    if b[j] == b'b' {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return false;
    }
    j += 1;
    while b.get(j) == Some(&b'#') {
        j += 1;
    }
    b.get(j) == Some(&b'"')
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether the identifier at `start` continues a path (`x::ident`) rather than starting one.
fn after_path_separator(code: &[u8], start: usize) -> bool {
    let before: Vec<u8> = code[..start]
        .iter()
        .rev()
        .filter(|c| !c.is_ascii_whitespace())
        .take(2)
        .copied()
        .collect();
    before == b"::"
}

/// A tiny cursor over blanked code.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.b.len() && is_ident_byte(self.b[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    /// The leaves of a path tree after `::`: `a`, `a::b`, `{a, b::{c, d}}`, `*`.
    fn tree(&mut self) -> Vec<Vec<String>> {
        if self.eat("{") {
            let mut all = Vec::new();
            loop {
                if self.eat("}") {
                    break;
                }
                let before = self.i;
                all.extend(self.tree());
                self.eat(",");
                if self.i == before {
                    break; // not a path group after all; stop rather than loop
                }
            }
            return all;
        }
        if self.eat("*") {
            return vec![Vec::new()];
        }
        let Some(seg) = self.ident() else {
            return vec![Vec::new()];
        };
        let save = self.i;
        if self.eat("::") {
            self.skip_ws();
            if self.i < self.b.len()
                && (is_ident_byte(self.b[self.i])
                    || self.b[self.i] == b'{'
                    || self.b[self.i] == b'*')
            {
                return self
                    .tree()
                    .into_iter()
                    .map(|mut rest| {
                        rest.insert(0, seg.clone());
                        rest
                    })
                    .collect();
            }
            self.i = save;
        }
        vec![vec![seg]]
    }
}

/// The module path a file under `src/` defines: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn file_module(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

/// The graph node a module path belongs to, if it is one of ours.
fn node_of(
    path: &[String],
    top: &BTreeSet<String>,
    server_subs: &BTreeSet<String>,
) -> Option<String> {
    let first = path.first()?;
    if !top.contains(first) {
        return None;
    }
    if first == "server"
        && let Some(second) = path.get(1)
        && server_subs.contains(second)
    {
        return Some(format!("server::{second}"));
    }
    Some(first.clone())
}

/// Builds the graph from `(path relative to src/, text)` pairs.
fn graph(files: &[(PathBuf, String)]) -> Graph {
    let mut top = BTreeSet::new();
    let mut server_subs = BTreeSet::new();
    for (rel, _) in files {
        let module = file_module(rel);
        if let Some(first) = module.first() {
            top.insert(first.clone());
        }
        if module.first().map(String::as_str) == Some("server")
            && let Some(second) = module.get(1)
        {
            server_subs.insert(second.clone());
        }
    }
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(rel, _)| file_module(rel)).collect();
    let mut g = Graph::default();
    for (rel, text) in files {
        let file_mod = file_module(rel);
        let Some(here_node) = node_of(&file_mod, &top, &server_subs) else {
            continue;
        };
        g.nodes.insert(here_node);
        let code = blank(text);
        let mut cur = Cursor { b: &code, i: 0 };
        // Inline modules open here: (name, brace depth at which it closes).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut pending_mod: Option<String> = None;
        while cur.i < code.len() {
            let c = code[cur.i];
            if c == b'{' {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
                cur.i += 1;
            } else if c == b'}' {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                cur.i += 1;
            } else if is_ident_byte(c) && (cur.i == 0 || !is_ident_byte(code[cur.i - 1])) {
                let start = cur.i;
                let word = cur.ident().unwrap_or_default();
                if word == "mod" {
                    pending_mod = cur.ident();
                    continue;
                }
                pending_mod = None;
                let at = cur.i;
                let mut here: Vec<String> = file_mod.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let child = |w: &str| {
                    let mut p = here.clone();
                    p.push(w.to_string());
                    modules.contains(&p)
                };
                let starts_path =
                    matches!(word.as_str(), "crate" | "super" | "self") || child(&word);
                if !starts_path || after_path_separator(&code, start) || !cur.eat("::") {
                    cur.i = at;
                    continue;
                }
                let line = code[..start].iter().filter(|&&c| c == b'\n').count() + 1;
                let from = node_of(&here, &top, &server_subs);
                cur.i = start;
                for leaf in cur.tree() {
                    let Some(abs) = resolve(&here, &leaf) else {
                        continue;
                    };
                    let (Some(from), Some(to)) = (from.clone(), node_of(&abs, &top, &server_subs))
                    else {
                        continue;
                    };
                    if from != to {
                        g.edges.entry((from, to)).or_insert_with(|| Witness {
                            file: format!("src/{}", rel.display()),
                            line,
                            path: leaf.join("::"),
                        });
                    }
                }
            } else {
                if c == b';' {
                    pending_mod = None;
                }
                cur.i += 1;
            }
        }
    }
    g
}

/// A leaf such as `["super", "super", "frame", "Shard"]` written in module `here`, made absolute.
fn resolve(here: &[String], leaf: &[String]) -> Option<Vec<String>> {
    let mut segs = leaf.iter().peekable();
    let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("self") => {
            segs.next();
            here.to_vec()
        }
        Some("super") => here.to_vec(),
        // A child module named without a prefix (`use door::x;` in `server`).
        Some(_) => here.to_vec(),
        None => return None,
    };
    while segs.peek().map(|s| s.as_str()) == Some("super") {
        segs.next();
        base.pop()?;
    }
    base.extend(segs.filter(|s| s.as_str() != "self").cloned());
    Some(base)
}

/// Every cycle, one per strongly connected component with more than one node: the component
/// and one loop through it with the line that writes each edge.
fn cycles(g: &Graph) -> Vec<String> {
    let mut out_edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in g.edges.keys() {
        out_edges.entry(a).or_default().push(b);
    }
    // Tarjan's algorithm, recursive: the graph has a few dozen nodes.
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        sccs: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, e: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for &w in e.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, e, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.sccs.push(scc);
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for n in &g.nodes {
        if !s.index.contains_key(n.as_str()) {
            visit(n, &out_edges, &mut s);
        }
    }
    let mut reports = Vec::new();
    for mut scc in s.sccs.into_iter().filter(|c| c.len() > 1) {
        scc.sort_unstable();
        let members: BTreeSet<&str> = scc.iter().copied().collect();
        // The shortest loop from the first member back to itself, inside the component.
        let start = scc[0];
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for &w in out_edges.get(v).into_iter().flatten() {
                if !members.contains(w) {
                    continue;
                }
                if w == start {
                    closing = Some(v);
                    break 'bfs;
                }
                if !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut back = Vec::new();
        let mut v = closing.unwrap();
        while v != start {
            back.push(v);
            v = prev[v];
        }
        back.reverse();
        let loop_nodes: Vec<&str> = std::iter::once(start).chain(back).chain([start]).collect();
        let mut text = format!("cycle among {{{}}}:\n", scc.join(", "));
        for pair in loop_nodes.windows(2) {
            let w = &g.edges[&(pair[0].to_string(), pair[1].to_string())];
            text.push_str(&format!(
                "  {} -> {}   ({}:{} `{}`)\n",
                pair[0], pair[1], w.file, w.line, w.path
            ));
        }
        reports.push(text);
    }
    reports
}

fn sources(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if rel != Path::new("lib.rs") && rel != Path::new("main.rs") {
                    files.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn src_has_no_module_cycles() {
    let g = graph(&sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    assert!(
        g.nodes.len() > 15,
        "the scan found too few modules: {:?}",
        g.nodes
    );
    assert!(
        g.edges.len() > 20,
        "the scan found too few edges: {:?}",
        g.edges.keys()
    );
    if std::env::var_os("MODULE_GRAPH_PRINT").is_some() {
        for ((a, b), w) in &g.edges {
            println!("{a} -> {b}   ({}:{} `{}`)", w.file, w.line, w.path);
        }
    }
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "module cycles in src/ (docs/architecture.md):\n{}",
        found.join("\n")
    );
}

fn planted(files: &[(&str, &str)]) -> Graph {
    graph(
        &files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect::<Vec<_>>(),
    )
}

fn edge_set(g: &Graph) -> BTreeSet<(String, String)> {
    g.edges.keys().cloned().collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn the_scan_sees_every_form_of_path_and_nothing_in_comments_or_strings() {
    let g = planted(&[
        (
            "a.rs",
            "use crate::{b::X, c::{self, Y}};\nfn f() { crate::d::g(); }\nstruct S { e: crate::e::T }\n",
        ),
        (
            "b.rs",
            "// crate::a::nope\n/* crate::a::nope /* nested */ crate::a */ const S: &str = \"crate::a\";\n",
        ),
        (
            "c.rs",
            "const R: &str = r#\"crate::a \"# ; const C: char = '{'; const Q: [char; 2] = ['\\'','\"']; const S: &str = \"crate::a\"; fn f<'a>(x: &'a str) {}\n",
        ),
        (
            "d.rs",
            "mod inner { use super::super::e::Z; }\n#[cfg(test)]\nmod tests { use super::*; use crate::a; }\n",
        ),
        ("e.rs", ""),
        (
            "server/mod.rs",
            "use self::door::f; mod door; mod models; fn r() { models::m(); x::door::no(); }",
        ),
        (
            "server/door.rs",
            "use super::models::M; fn g() { super::h(); }",
        ),
        ("server/models.rs", "use crate::server::door::f;"),
    ]);
    let want: BTreeSet<_> = [
        pair("a", "b"),
        pair("a", "c"),
        pair("a", "d"),
        pair("a", "e"),
        pair("d", "e"),
        pair("d", "a"),
        pair("server", "server::door"),
        pair("server", "server::models"),
        pair("server::door", "server::models"),
        pair("server::door", "server"),
        pair("server::models", "server::door"),
    ]
    .into_iter()
    .collect();
    assert_eq!(edge_set(&g), want);
}

#[test]
fn a_planted_cycle_is_reported_with_its_lines() {
    let g = planted(&[
        ("a.rs", "use crate::b::X;"),
        ("b/mod.rs", "mod inner;"),
        ("b/inner.rs", "\n\nfn f() { crate::c::g() }"),
        ("c.rs", "use crate::a::Y;"),
        ("d.rs", "use crate::a::Y;"),
    ]);
    let found = cycles(&g);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("cycle among {a, b, c}"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("b -> c   (src/b/inner.rs:3 `crate::c::g`)"),
        "{}",
        found[0]
    );
    let acyclic = planted(&[
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "use crate::c::X;"),
        ("c.rs", ""),
    ]);
    assert!(cycles(&acyclic).is_empty());
}
