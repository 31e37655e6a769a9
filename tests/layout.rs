//! Layering guard (issue 14): reads the crate's own source (`src/**/*.rs`), builds the module
//! dependency graph and asserts the architecture's rules, so that the layering stays true.
//!
//! Modules: `src/lib.rs` is `crate`, `src/main.rs` is `main`, `src/a/mod.rs` and `src/a.rs`
//! are `a`, `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`. Only files reached through `mod`
//! declarations from `lib.rs`/`main.rs` count (a stale file, or one declared under
//! `#[cfg(test)]`, is not part of the build and so not of the graph).
//!
//! Edges: every path that names a module of this crate, in `use` trees (grouped, nested,
//! multi-line) and in code: `crate::…`, `super::…` (repeated), `self::…`, a child module's
//! name, and in the binary `clustersync::…`. A path resolves to its longest prefix that is a
//! module (`crate::engine::build_client` → `engine`). Comments, doc comments, string and char
//! literals are removed first, and so is every item under `#[cfg(test)]` (tests may reach
//! anywhere). References of a module to itself are dropped; a child's use of its parent is kept.
//!
//! A small hand-written lexer, no dependencies: run `cargo test --test layout -- --nocapture`
//! to see the collapsed graphs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::OnceLock;

type Graph = BTreeMap<String, BTreeSet<String>>;

const ROOT: &str = "crate";
const BIN: &str = "main";
const LIB_NAME: &str = "clustersync";

// ---------------------------------------------------------------------------------------------
// Lexer: identifiers, `::` and single punctuation, with line numbers. Comments, strings, chars,
// numbers and lifetimes produce no tokens.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Sep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Skips a `"…"` string body starting after the opening quote; returns the index after it.
fn skip_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => {
                if c.get(i + 1) == Some(&'\n') {
                    *line += 1;
                }
                i += 2;
            }
            '"' => return i + 1,
            ch => {
                if ch == '\n' {
                    *line += 1;
                }
                i += 1;
            }
        }
    }
    i
}

/// Skips a raw string body (after `r##"`) closed by `"` and `hashes` `#`.
fn skip_raw(c: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        if c[i] == '\n' {
            *line += 1;
        }
        i += 1;
    }
    i
}

/// Skips a char literal body starting after the opening quote.
fn skip_char(c: &[char], mut i: usize) -> usize {
    if c.get(i) == Some(&'\\') {
        i += 1;
    }
    i += 1;
    while i < c.len() && c[i] != '\'' {
        i += 1;
    }
    i + 1
}

fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < n {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < n {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1, &mut line);
        } else if ch == '\'' {
            if next == Some('\\') || c.get(i + 2) == Some(&'\'') {
                i = skip_char(&c, i + 1);
            } else {
                // A lifetime or a label.
                i += 1;
                while i < n && is_ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if is_ident_start(ch) {
            let start = i;
            while i < n && is_ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let after = c.get(i).copied();
            if matches!(word.as_str(), "r" | "br" | "cr") && matches!(after, Some('"' | '#')) {
                let mut j = i;
                while j < n && c[j] == '#' {
                    j += 1;
                }
                if c.get(j) == Some(&'"') {
                    i = skip_raw(&c, j + 1, j - i, &mut line);
                    continue;
                }
                if word == "r" && j == i + 1 && c.get(j).is_some_and(|&x| is_ident_start(x)) {
                    // A raw identifier: `r#type`.
                    let s = j;
                    let mut k = j;
                    while k < n && is_ident_char(c[k]) {
                        k += 1;
                    }
                    out.push(Token {
                        tok: Tok::Ident(c[s..k].iter().collect()),
                        line,
                    });
                    i = k;
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && after == Some('"') {
                i = skip_string(&c, i + 1, &mut line);
            } else if word == "b" && after == Some('\'') {
                i = skip_char(&c, i + 1);
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if ch.is_ascii_digit() {
            while i < n && is_ident_char(c[i]) {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

fn punct(t: &[Token], i: usize, p: char) -> bool {
    matches!(t.get(i), Some(Token { tok: Tok::Punct(c), .. }) if *c == p)
}

fn ident(t: &[Token], i: usize) -> Option<&str> {
    match t.get(i) {
        Some(Token {
            tok: Tok::Ident(w), ..
        }) => Some(w.as_str()),
        _ => None,
    }
}

fn sep(t: &[Token], i: usize) -> bool {
    matches!(t.get(i), Some(Token { tok: Tok::Sep, .. }))
}

fn opens(t: &[Token], i: usize) -> bool {
    punct(t, i, '(') || punct(t, i, '[') || punct(t, i, '{')
}

fn closes(t: &[Token], i: usize) -> bool {
    punct(t, i, ')') || punct(t, i, ']') || punct(t, i, '}')
}

// ---------------------------------------------------------------------------------------------
// `#[cfg(test)]` items are removed from the token stream.

/// At `#[cfg(test)]` (or `#![cfg(test)]`): the index after it, and whether it is inner.
fn cfg_test_attr(t: &[Token], i: usize) -> Option<(usize, bool)> {
    if !punct(t, i, '#') {
        return None;
    }
    let inner = punct(t, i + 1, '!');
    let j = if inner { i + 2 } else { i + 1 };
    let is_cfg_test = punct(t, j, '[')
        && ident(t, j + 1) == Some("cfg")
        && punct(t, j + 2, '(')
        && ident(t, j + 3) == Some("test")
        && punct(t, j + 4, ')')
        && punct(t, j + 5, ']');
    is_cfg_test.then_some((j + 6, inner))
}

/// The index of the bracket closing the one at `open`.
fn matching(t: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for j in open..t.len() {
        if opens(t, j) {
            depth += 1;
        } else if closes(t, j) {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return j;
            }
        }
    }
    t.len()
}

/// Skips one item (or statement, field, variant) starting at `i`; returns the index after it.
fn skip_item(t: &[Token], mut i: usize) -> usize {
    while punct(t, i, '#') && punct(t, i + 1, '[') {
        i = matching(t, i + 1) + 1;
    }
    let is_item = matches!(
        ident(t, i),
        Some(
            "pub"
                | "fn"
                | "mod"
                | "struct"
                | "enum"
                | "union"
                | "impl"
                | "trait"
                | "use"
                | "const"
                | "static"
                | "type"
                | "async"
                | "unsafe"
                | "extern"
                | "macro_rules"
        )
    );
    let mut depth = 0usize;
    while i < t.len() {
        if opens(t, i) {
            depth += 1;
        } else if closes(t, i) {
            if depth == 0 {
                return i; // the end of the enclosing block
            }
            depth -= 1;
            if depth == 0 && punct(t, i, '}') {
                return i + 1;
            }
        } else if depth == 0 && (punct(t, i, ';') || (!is_item && punct(t, i, ','))) {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Skips to the end of the enclosing block (for an inner `#![cfg(test)]`).
fn skip_rest_of_block(t: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        if opens(t, i) {
            depth += 1;
        } else if closes(t, i) {
            if depth == 0 {
                return i;
            }
            depth -= 1;
        }
        i += 1;
    }
    i
}

fn strip_test_items(t: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if let Some((end, inner)) = cfg_test_attr(&t, i) {
            i = if inner {
                skip_rest_of_block(&t, end)
            } else {
                skip_item(&t, end)
            };
        } else {
            out.push(t[i].clone());
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Inline `mod x { … }` scopes and the module names each scope declares.

struct Scopes {
    /// The scope of each token.
    id: Vec<usize>,
    /// Each scope's inline module segments below the file's module (scope 0: the file).
    segs: Vec<Vec<String>>,
    /// Each scope's declared child modules (`mod x;` and `mod x { … }`).
    children: Vec<BTreeSet<String>>,
}

fn scopes(t: &[Token]) -> Scopes {
    let mut s = Scopes {
        id: Vec::with_capacity(t.len()),
        segs: vec![vec![]],
        children: vec![BTreeSet::new()],
    };
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    let mut pending = None;
    let mut depth = 0usize;
    for i in 0..t.len() {
        let cur = stack.last().map_or(0, |x| x.0);
        s.id.push(cur);
        if ident(t, i) == Some("mod") {
            if let Some(name) = ident(t, i + 1) {
                s.children[cur].insert(name.to_string());
                if punct(t, i + 2, '{') {
                    let mut segs = s.segs[cur].clone();
                    segs.push(name.to_string());
                    s.segs.push(segs);
                    s.children.push(BTreeSet::new());
                    pending = Some(s.segs.len() - 1);
                }
            }
        } else if punct(t, i, '{') {
            depth += 1;
            if let Some(id) = pending.take() {
                stack.push((id, depth));
            }
        } else if punct(t, i, '}') {
            if stack.len() > 1 && stack.last().map(|x| x.1) == Some(depth) {
                stack.pop();
            }
            depth = depth.saturating_sub(1);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Paths.

/// Where a path stands while it is read: not begun, not this crate's, or at an absolute module
/// path of the library (`false`) or the binary (`true`).
#[derive(Clone, Debug)]
enum Base {
    Start,
    Ignore,
    At(bool, Vec<String>),
}

struct Cx<'a> {
    /// The file belongs to the binary crate.
    bin: bool,
    /// The file's module path (empty for `lib.rs` and `main.rs`).
    file: Vec<String>,
    sc: &'a Scopes,
}

/// A reference found: binary or library, absolute segments, line.
type Ref = (bool, Vec<String>, usize);

impl Cx<'_> {
    fn here(&self, scope: usize) -> Vec<String> {
        let mut v = self.file.clone();
        v.extend(self.sc.segs[scope].iter().cloned());
        v
    }

    fn is_start(&self, w: &str, scope: usize) -> bool {
        matches!(w, "crate" | "self" | "super" | LIB_NAME) || self.sc.children[scope].contains(w)
    }

    fn start(&self, w: &str, leading: bool, scope: usize) -> Base {
        match w {
            LIB_NAME => Base::At(false, vec![]),
            _ if leading => Base::Ignore,
            "crate" => Base::At(self.bin, vec![]),
            "self" => Base::At(self.bin, self.here(scope)),
            "super" => {
                let mut v = self.here(scope);
                v.pop();
                Base::At(self.bin, v)
            }
            _ if self.sc.children[scope].contains(w) => {
                let mut v = self.here(scope);
                v.push(w.to_string());
                Base::At(self.bin, v)
            }
            _ => Base::Ignore,
        }
    }
}

fn step(b: Base, w: &str) -> Base {
    match b {
        Base::At(bin, mut v) => {
            match w {
                "super" => {
                    v.pop();
                }
                "self" => {}
                _ => v.push(w.to_string()),
            }
            Base::At(bin, v)
        }
        other => other,
    }
}

/// Reads a path or use tree at `i` below `base`; records what it names; returns the index after.
fn parse_tree(
    t: &[Token],
    mut i: usize,
    base: Base,
    cx: &Cx,
    scope: usize,
    out: &mut Vec<Ref>,
) -> usize {
    let mut cur = match base {
        Base::Start => {
            let leading = sep(t, i);
            if leading {
                i += 1;
            }
            if punct(t, i, '{') {
                return parse_group(t, i, Base::Start, cx, scope, out);
            }
            let Some(w) = ident(t, i) else { return i };
            i += 1;
            cx.start(w, leading, scope)
        }
        other => {
            if punct(t, i, '{') {
                return parse_group(t, i, other, cx, scope, out);
            }
            let Some(w) = ident(t, i) else { return i };
            i += 1;
            step(other, w)
        }
    };
    let mut line = t[i - 1].line;
    while sep(t, i) {
        if let Some(w) = ident(t, i + 1) {
            line = t[i + 1].line;
            cur = step(cur, w);
            i += 2;
        } else if punct(t, i + 1, '{') {
            return parse_group(t, i + 1, cur, cx, scope, out);
        } else if punct(t, i + 1, '*') {
            i += 2;
            break;
        } else {
            break; // a turbofish, `::<`
        }
    }
    if let Base::At(bin, segs) = cur {
        out.push((bin, segs, line));
    }
    i
}

/// Reads `{ a::b, self, c::{d, e} as f, * }` at `i` (the `{`) below `base`.
fn parse_group(
    t: &[Token],
    mut i: usize,
    base: Base,
    cx: &Cx,
    scope: usize,
    out: &mut Vec<Ref>,
) -> usize {
    i += 1;
    while i < t.len() {
        if punct(t, i, '}') {
            return i + 1;
        }
        if punct(t, i, ',') {
            i += 1;
        } else if ident(t, i) == Some("as") {
            i += 2;
        } else if punct(t, i, '*') {
            if let Base::At(bin, v) = &base {
                out.push((*bin, v.clone(), t[i].line));
            }
            i += 1;
        } else {
            let before = i;
            i = parse_tree(t, i, base.clone(), cx, scope, out);
            if i == before {
                i += 1;
            }
        }
    }
    i
}

/// Every reference to a module of this crate in a file's (stripped) tokens.
fn scan(t: &[Token], cx: &Cx) -> Vec<Ref> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let scope = cx.sc.id[i];
        match ident(t, i) {
            Some("use") => {
                i = parse_tree(t, i + 1, Base::Start, cx, scope, &mut out).max(i + 1);
                continue;
            }
            Some("in")
                if punct(t, i.wrapping_sub(1), '(')
                    && ident(t, i.wrapping_sub(2)) == Some("pub") =>
            {
                // `pub(in crate::x)` is a visibility, not a reference.
                while i < t.len() && !punct(t, i, ')') {
                    i += 1;
                }
                continue;
            }
            Some(w) if sep(t, i + 1) => {
                let after_sep = i >= 1 && sep(t, i - 1);
                let continues =
                    after_sep && i >= 2 && (ident(t, i - 2).is_some() || punct(t, i - 2, '>'));
                if !continues && (after_sep || cx.is_start(w, scope)) {
                    let from = if after_sep { i - 1 } else { i };
                    i = parse_tree(t, from, Base::Start, cx, scope, &mut out).max(i + 1);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The graph of a crate.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

struct Analysis {
    modules: BTreeSet<String>,
    edges: Vec<Edge>,
}

/// `src/a/b.rs` → `a::b`; `None` for what is not a module of the library or `main.rs`.
fn module_of(rel: &str) -> Option<String> {
    let p = rel.strip_prefix("src/")?.strip_suffix(".rs")?;
    match p {
        "lib" => return Some(ROOT.to_string()),
        "main" => return Some(BIN.to_string()),
        _ => {}
    }
    let mut segs: Vec<&str> = p.split('/').collect();
    if segs.last() == Some(&"mod") {
        segs.pop();
    }
    if segs.is_empty() || segs[0] == "bin" {
        return None;
    }
    Some(segs.join("::"))
}

fn segments(m: &str) -> Vec<String> {
    if m == ROOT || m == BIN {
        vec![]
    } else {
        m.split("::").map(str::to_string).collect()
    }
}

/// Builds the graph of a crate given as (path relative to the manifest, source) pairs.
fn analyze(files: &[(String, String)]) -> Analysis {
    struct Parsed {
        rel: String,
        toks: Vec<Token>,
        sc: Scopes,
    }
    let mut parsed = BTreeMap::new();
    for (rel, src) in files {
        if let Some(m) = module_of(rel) {
            let toks = strip_test_items(lex(src));
            let sc = scopes(&toks);
            parsed.insert(
                m,
                Parsed {
                    rel: rel.clone(),
                    toks,
                    sc,
                },
            );
        }
    }
    // Only files that the build reaches through `mod` declarations.
    let mut modules = BTreeSet::new();
    let mut stack: Vec<String> = [ROOT, BIN]
        .iter()
        .filter(|r| parsed.contains_key(**r))
        .map(|r| r.to_string())
        .collect();
    while let Some(m) = stack.pop() {
        if !modules.insert(m.clone()) {
            continue;
        }
        for c in &parsed[&m].sc.children[0] {
            let child = if m == ROOT || m == BIN {
                c.clone()
            } else {
                format!("{m}::{c}")
            };
            if parsed.contains_key(&child) {
                stack.push(child);
            }
        }
    }
    let bin_mods: BTreeSet<String> = parsed
        .get(BIN)
        .map(|p| p.sc.children[0].clone())
        .unwrap_or_default();
    let is_bin =
        |m: &str| m == BIN || (m != ROOT && bin_mods.contains(m.split("::").next().unwrap_or("")));
    let resolve = |bin: bool, segs: &[String]| -> String {
        for k in (1..=segs.len()).rev() {
            let cand = segs[..k].join("::");
            if modules.contains(&cand) && is_bin(&cand) == bin {
                return cand;
            }
        }
        (if bin { BIN } else { ROOT }).to_string()
    };
    let mut edges = BTreeSet::new();
    for m in &modules {
        let p = &parsed[m];
        let cx = Cx {
            bin: is_bin(m),
            file: segments(m),
            sc: &p.sc,
        };
        for (bin, segs, line) in scan(&p.toks, &cx) {
            let to = resolve(bin, &segs);
            if &to != m {
                edges.insert(Edge {
                    from: m.clone(),
                    to,
                    file: p.rel.clone(),
                    line,
                });
            }
        }
    }
    Analysis {
        modules,
        edges: edges.into_iter().collect(),
    }
}

fn graph_of(modules: &BTreeSet<String>, edges: &[Edge]) -> Graph {
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for e in edges {
        g.entry(e.from.clone()).or_default().insert(e.to.clone());
    }
    g
}

fn read_sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_sources(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).expect("under the manifest dir");
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let src = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            out.push((rel, src));
        }
    }
}

/// The real crate's analysis, read once.
fn real() -> &'static Analysis {
    static CELL: OnceLock<Analysis> = OnceLock::new();
    CELL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        read_sources(&root.join("src"), root, &mut files);
        analyze(&files)
    })
}

/// Module → the modules it references, for the crate's real source.
fn graph() -> Graph {
    let a = real();
    graph_of(&a.modules, &a.edges)
}

/// The first `depth` segments of a module path (`crate` and `main` are their own).
fn head(m: &str, depth: usize) -> String {
    m.split("::")
        .take(depth.max(1))
        .collect::<Vec<_>>()
        .join("::")
}

/// Maps every module to its first `depth` segments, dropping the self-edges this makes.
fn collapse(g: &Graph, depth: usize) -> Graph {
    let mut out = Graph::new();
    for (from, tos) in g {
        let f = head(from, depth);
        let set = out.entry(f.clone()).or_default();
        for to in tos {
            let t = head(to, depth);
            if t != f {
                set.insert(t);
            }
        }
    }
    out
}

/// The strongly connected components with more than one module (Tarjan), sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        next: usize,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let m = t.low[v].min(t.low[w]);
                t.low.insert(v, m);
            } else if t.on.contains(w) {
                let m = t.low[v].min(t.index[w]);
                t.low.insert(v, m);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(k, vs)| std::iter::once(k.as_str()).chain(vs.iter().map(String::as_str)))
        .collect();
    for n in nodes {
        if !t.index.contains_key(n) {
            visit(&mut t, n);
        }
    }
    t.out.sort();
    t.out
}

/// A shortest chain `from -> … -> to` of at least one edge (so `from == to` finds a cycle).
fn path_to(g: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for n in g.get(from).into_iter().flatten() {
        prev.insert(n.clone(), from.to_string());
        queue.push_back(n.clone());
    }
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![n.clone()];
            let mut cur = n;
            loop {
                let p = prev[&cur].clone();
                path.push(p.clone());
                if p == from {
                    break;
                }
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for m in g.get(&n).into_iter().flatten() {
            if !prev.contains_key(m) {
                prev.insert(m.clone(), n.clone());
                queue.push_back(m.clone());
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Failure messages.

/// `a -> b (src/a.rs:3, 17)`, one line per (from, to, file).
fn describe<'a>(edges: impl IntoIterator<Item = &'a Edge>) -> Vec<String> {
    let mut by: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
    for e in edges {
        by.entry((&e.from, &e.to, &e.file))
            .or_default()
            .push(e.line);
    }
    by.into_iter()
        .map(|((from, to, file), lines)| {
            let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
            format!("{from} -> {to} ({file}:{})", lines.join(", "))
        })
        .collect()
}

fn edge_list(g: &Graph) -> String {
    g.iter()
        .flat_map(|(f, ts)| ts.iter().map(move |t| format!("  {f} -> {t}")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a collapsed graph for cycles; on failure names each cycle and the file edges behind
/// every hop.
fn assert_acyclic(edges: &[Edge], keep: &dyn Fn(&str) -> bool, depth: usize, what: &str) {
    let kept: Vec<&Edge> = edges
        .iter()
        .filter(|e| keep(&e.from) && keep(&e.to))
        .collect();
    let mut g = Graph::new();
    for e in &kept {
        let (f, t) = (head(&e.from, depth), head(&e.to, depth));
        if f != t {
            g.entry(f).or_default().insert(t);
        }
    }
    eprintln!("{what}, collapsed at depth {depth}:\n{}", edge_list(&g));
    let found = cycles(&g);
    if found.is_empty() {
        return;
    }
    let mut msg = format!("{} cycle(s) {what}:\n", found.len());
    for comp in &found {
        let members: BTreeSet<&String> = comp.iter().collect();
        let sub: Graph = g
            .iter()
            .filter(|(k, _)| members.contains(k))
            .map(|(k, vs)| {
                (
                    k.clone(),
                    vs.iter().filter(|v| members.contains(v)).cloned().collect(),
                )
            })
            .collect();
        msg += &format!("\n  component {{{}}}\n", comp.join(", "));
        let chain = path_to(&sub, &comp[0], &comp[0]).unwrap_or_default();
        msg += &format!("  e.g. {}\n", chain.join(" -> "));
        msg += "  every edge inside the component, and the references that make it:\n";
        for (f, ts) in &sub {
            for t in ts {
                msg += &format!("    {f} -> {t}:\n");
                let why = kept
                    .iter()
                    .copied()
                    .filter(|e| head(&e.from, depth) == *f && head(&e.to, depth) == *t);
                for line in describe(why) {
                    msg += &format!("      {line}\n");
                }
            }
        }
    }
    panic!("{msg}");
}

fn in_subtree(m: &str, root: &str) -> bool {
    m == root
        || m.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// The real graph, after checking that the parser found something: a rule cannot pass by
/// finding nothing.
fn checked_graph() -> Graph {
    let g = graph();
    let edges: usize = g.values().map(BTreeSet::len).sum();
    assert!(
        g.len() >= 20 && edges >= 30,
        "the guard found only {} modules and {edges} edges in src/: the parser is broken",
        g.len()
    );
    g
}

fn assert_no_edges(what: &str, bad: impl Fn(&Edge) -> bool) {
    checked_graph();
    let found = describe(real().edges.iter().filter(|e| bad(e)));
    assert!(
        found.is_empty(),
        "{} forbidden edge(s): {what}:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The rules: the layering the README's "Architecture" section draws.

#[test]
fn no_cycles_between_top_level_modules() {
    let g = checked_graph();
    let top = collapse(&g, 1);
    eprintln!("top-level graph:\n{}", edge_list(&top));
    assert_acyclic(&real().edges, &|_| true, 1, "between top-level modules");
}

#[test]
fn no_cycles_inside_the_engine() {
    checked_graph();
    assert_acyclic(
        &real().edges,
        &|m| in_subtree(m, "engine"),
        2,
        "inside the engine",
    );
}

#[test]
fn the_operator_reaches_the_engine_only_through_the_contract() {
    assert_no_edges("the operator must not use the engine", |e| {
        in_subtree(&e.from, "operator") && in_subtree(&e.to, "engine")
    });
}

#[test]
fn the_engine_knows_nothing_of_kubernetes_or_the_cli() {
    assert_no_edges(
        "the engine must not use the operator, the CLI or main",
        |e| {
            in_subtree(&e.from, "engine")
                && (in_subtree(&e.to, "operator") || in_subtree(&e.to, "cli") || e.to == BIN)
        },
    );
}

#[test]
fn the_operator_never_talks_to_mongodb() {
    assert_no_edges(
        "the operator must ask the engine, not connect to the clusters",
        |e| {
            in_subtree(&e.from, "operator")
                && ["mongo", "preflight", "plan", "verify"]
                    .iter()
                    .any(|m| in_subtree(&e.to, m))
        },
    );
}

#[test]
fn inside_the_engine_the_handle_drives_control_drives_sync_drives_store() {
    // api (HTTP) → the handle (engine/mod.rs) and its control (`impl Engine` blocks, one file
    // per verb) → sync → store (store, lease, fence): no arrow from a lower layer to a higher.
    let layer = |m: &str| -> Option<u8> {
        if in_subtree(m, "engine::api") {
            Some(3)
        } else if m == "engine" || in_subtree(m, "engine::control") {
            Some(2)
        } else if in_subtree(m, "engine::sync") {
            Some(1)
        } else if ["engine::store", "engine::lease", "engine::fence"]
            .iter()
            .any(|s| in_subtree(m, s))
        {
            Some(0)
        } else {
            None
        }
    };
    assert_no_edges(
        "a lower engine layer must not use a higher one",
        |e| matches!((layer(&e.from), layer(&e.to)), (Some(f), Some(t)) if f < t),
    );
}

#[test]
fn the_contract_does_no_io_and_depends_on_nothing() {
    assert_no_edges("the contract must use only itself", |e| {
        in_subtree(&e.from, "contract") && !in_subtree(&e.to, "contract")
    });
}

#[test]
fn the_mongo_layer_depends_only_on_the_contract_and_uri() {
    assert_no_edges("mongo must use only the contract and uri", |e| {
        in_subtree(&e.from, "mongo")
            && !["mongo", "contract", "uri"]
                .iter()
                .any(|m| in_subtree(&e.to, m))
    });
}

/// Where each outside crate (or part of `std`) that does I/O is named, as `module: crate`:
/// the first segment of a path (`mongodb::Client`, `use kube::{…}`), outside tests.
fn outside_uses(crates: &[&str]) -> Vec<(String, String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    read_sources(&root.join("src"), root, &mut files);
    let mut found = Vec::new();
    for (rel, src) in &files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let t = strip_test_items(lex(src));
        for i in 0..t.len() {
            let Some(name) = ident(&t, i) else { continue };
            // A path's first segment: followed by `::`, not itself after `::` or `.`.
            let first = i == 0 || !(sep(&t, i - 1) || punct(&t, i - 1, '.'));
            let std_io = name == "std"
                && sep(&t, i + 1)
                && ident(&t, i + 2).is_some_and(|n| ["fs", "net", "process"].contains(&n));
            let named = if std_io {
                format!("std::{}", ident(&t, i + 2).unwrap_or_default())
            } else {
                name.to_string()
            };
            if first && sep(&t, i + 1) && crates.contains(&named.as_str()) {
                found.push((module.clone(), named, t[i].line));
            }
        }
    }
    found
}

#[test]
fn outside_crates_stay_in_their_layers() {
    // The operator never connects to MongoDB; the engine and what it uses know nothing of
    // Kubernetes; the contract does no I/O at all.
    let rules: [(&str, &[&str], &str); 3] = [
        (
            "operator",
            &["mongodb"],
            "the operator asks the engine; it never connects to MongoDB",
        ),
        (
            "engine",
            &["kube", "kube_runtime", "k8s_openapi"],
            "the engine knows nothing of Kubernetes",
        ),
        (
            "contract",
            &[
                "mongodb",
                "kube",
                "kube_runtime",
                "k8s_openapi",
                "tokio",
                "reqwest",
                "hyper",
                "axum",
                "std::fs",
                "std::net",
                "std::process",
            ],
            "the contract is types and pure functions: no I/O",
        ),
    ];
    let mut broken = Vec::new();
    for (layer, crates, why) in rules {
        for (module, name, line) in outside_uses(crates) {
            if in_subtree(&module, layer)
                || (layer == "engine"
                    && ["mongo", "preflight", "plan", "verify"]
                        .iter()
                        .any(|m| in_subtree(&module, m)))
            {
                broken.push(format!("{module} uses {name} (line {line}): {why}"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn preflight_plan_and_verify_sit_below_the_engine_and_the_operator() {
    assert_no_edges(
        "preflight, plan and verify must not use the engine, the operator or the CLI",
        |e| {
            (in_subtree(&e.from, "preflight")
                || in_subtree(&e.from, "plan")
                || in_subtree(&e.from, "verify"))
                && ["engine", "operator", "cli"]
                    .iter()
                    .any(|m| in_subtree(&e.to, m))
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The guard's own test: a small crate in memory.

fn fake_crate() -> Vec<(String, String)> {
    let files = [
        (
            "src/lib.rs",
            r#"//! Docs naming crate::operator::workload and [`crate::verify`].
pub mod engine;
pub mod operator;
pub mod verify;
pub mod uri;
pub mod never_written; // no file: not a module
"#,
        ),
        (
            "src/main.rs",
            r#"use clustersync::engine::{self, options::StartOptions};
use clustersync::{
    verify::{self, report},
};
fn main() {
    let _ = ::clustersync::uri::parse();
    crate::helper();
}
"#,
        ),
        (
            "src/engine/mod.rs",
            r#"pub mod cea;
pub mod copy;
pub mod job;
pub mod mongo;
pub mod options;
#[cfg(test)]
mod testkit;
use mongodb::{options::ClientOptions, Client};
use std::{fmt, sync::Arc};
pub fn build_client() -> Client { mongo::connect() }
"#,
        ),
        ("src/engine/testkit.rs", "use crate::operator::workload;\n"),
        ("src/engine/copy.rs", "pub fn run() {}\n"),
        (
            "src/engine/job.rs",
            r#"pub fn run() { super::copy::run(); self::helper(); }
#[cfg(test)]
use crate::operator::workload;
fn helper() {}
"#,
        ),
        (
            "src/engine/mongo.rs",
            r#"pub mod codes { pub const X: i32 = 1; }
pub fn connect() -> i32 { codes::X + self::codes::X }
"#,
        ),
        (
            "src/engine/options.rs",
            r##"use crate::{
    uri::{self, ClusterUri},
    verify::report::Report,
};
pub struct StartOptions { pub uri: ClusterUri, pub s: &'static str }
const QUOTE: char = '"';
const ESC: char = '\'';
const B: u8 = b'"';
fn doc() -> &'static str { "use crate::operator::workload; crate::cli::x" }
fn raw() -> &'static str { r#"crate::operator::"quoted"::x"# }
/* block crate::operator::a /* nested crate::operator::b */ crate::operator::c */
/// doc comment: [`crate::operator::workload`]
fn life<'a>(x: &'a str) -> &'a str { x }
"##,
        ),
        (
            "src/engine/cea/mod.rs",
            r#"pub mod ddl;
pub(crate) fn x() {}
pub(super) fn y() {}
pub(in crate::engine) fn z() {}
"#,
        ),
        (
            "src/engine/cea/ddl.rs",
            r#"use super::super::job::{Ctx,
    JobError};
use super::*;
pub async fn run(ctx: &Ctx) {
    let t = super::super::mongo::connect();
    crate::engine::build_client();
    let o = crate::engine::options::StartOptions::new::<u8>();
}
#[cfg(test)]
mod tests {
    use crate::operator::workload;
    fn f() { crate::verify::x(); }
}
fn after_the_tests() { crate::uri::parse(); }
"#,
        ),
        ("src/operator/mod.rs", "pub mod workload;\n"),
        (
            "src/operator/workload.rs",
            r#"use crate::engine::options::StartOptions;
fn f() -> String { format!("{}", crate::verify::DEFAULT) }
"#,
        ),
        (
            "src/verify/mod.rs",
            "pub mod report;\npub const DEFAULT: u32 = 1;\n",
        ),
        ("src/verify/report.rs", "use super::DEFAULT;\n"),
        ("src/uri.rs", "pub fn parse() {}\n"),
        ("src/stale.rs", "use crate::operator::workload;\n"),
    ];
    files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

#[test]
fn the_parser_finds_known_edges() {
    let a = analyze(&fake_crate());
    let set = |xs: &[&str]| -> BTreeSet<String> { xs.iter().map(|x| x.to_string()).collect() };
    assert_eq!(
        a.modules,
        set(&[
            "crate",
            "main",
            "engine",
            "engine::cea",
            "engine::cea::ddl",
            "engine::copy",
            "engine::job",
            "engine::mongo",
            "engine::options",
            "operator",
            "operator::workload",
            "uri",
            "verify",
            "verify::report",
        ])
    );
    let g = graph_of(&a.modules, &a.edges);
    let expect: Graph = [
        ("crate", set(&[])),
        (
            "main",
            set(&[
                "engine",
                "engine::options",
                "uri",
                "verify",
                "verify::report",
            ]),
        ),
        ("engine", set(&["engine::mongo"])),
        ("engine::cea", set(&[])),
        (
            "engine::cea::ddl",
            set(&[
                "engine",
                "engine::cea",
                "engine::job",
                "engine::mongo",
                "engine::options",
                "uri",
            ]),
        ),
        ("engine::copy", set(&[])),
        ("engine::job", set(&["engine::copy"])),
        ("engine::mongo", set(&[])),
        ("engine::options", set(&["uri", "verify::report"])),
        ("operator", set(&[])),
        ("operator::workload", set(&["engine::options", "verify"])),
        ("uri", set(&[])),
        ("verify", set(&[])),
        ("verify::report", set(&["verify"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(g, expect);

    // Messages name the file and the line.
    let bad: Vec<&Edge> = a
        .edges
        .iter()
        .filter(|e| e.from.starts_with("operator"))
        .collect();
    assert_eq!(
        describe(bad),
        vec![
            "operator::workload -> engine::options (src/operator/workload.rs:1)",
            "operator::workload -> verify (src/operator/workload.rs:2)",
        ]
    );
    let ddl: Vec<usize> = a
        .edges
        .iter()
        .filter(|e| e.from == "engine::cea::ddl" && e.to == "engine::job")
        .map(|e| e.line)
        .collect();
    assert_eq!(
        ddl,
        vec![1, 2],
        "a multi-line use is found on each of its lines"
    );

    // Collapsing.
    let c1 = collapse(&g, 1);
    assert_eq!(c1["engine"], set(&["uri", "verify"]));
    assert_eq!(c1["operator"], set(&["engine", "verify"]));
    assert_eq!(c1["main"], set(&["engine", "uri", "verify"]));
    let c2 = collapse(&g, 2);
    assert_eq!(
        c2["engine::cea"],
        set(&[
            "engine",
            "engine::job",
            "engine::mongo",
            "engine::options",
            "uri"
        ])
    );
    assert!(cycles(&c1).is_empty() && cycles(&g).is_empty());

    // Cycles and chains.
    let mut cyc = Graph::new();
    for (f, t) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("f", "f"),
    ] {
        cyc.entry(f.to_string()).or_default().insert(t.to_string());
    }
    assert_eq!(cycles(&cyc), vec![vec!["a", "b", "c"], vec!["d", "e"]]);
    assert_eq!(
        path_to(&cyc, "a", "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        path_to(&cyc, "a", "e"),
        Some(vec![
            "a".into(),
            "b".into(),
            "c".into(),
            "d".into(),
            "e".into()
        ])
    );
    assert_eq!(path_to(&cyc, "d", "a"), None);
}
