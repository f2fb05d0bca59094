//! The dependency rule of `src/`, checked by reading the source: every `crate::` and `super::`
//! path a file names (outside its `#[cfg(test)]` module) is a dependency on the file of the
//! module it names. Dependencies point one way:
//!
//! ```text
//! top       cli/  server.rs  state.rs  lib.rs          build and wire everything
//! http      http/  gateway/                            parse, call a wing, render (or proxy)
//!           web/                                       HTTP plumbing both of them share
//! wings     signin/ tokens/ openid/ clients/ catalog/ grant/    the rules of one feature each
//! platform  platform/                                  audit, batching, notifications, limits, fetches...
//! config    config.rs                                  typed settings
//! bottom    oauth/ (pure RFC rules)  store/ (SQL)
//! ```
//!
//! So: no file-level import loop (except the sibling pairs listed below); nothing below `http/`
//! names `http`, `gateway`, `web`, `state`, `server` or `cli`; `web/` names no endpoint, wing or
//! `state`; the gateway names no endpoint of `http/` and of the wings only `tokens/`; `platform/`
//! names only `platform/`, `store/`, `oauth/` and `config`; `config` only `oauth/`; `oauth/`
//! only `oauth/`; `store/` only `store/` and `oauth/`. Inside `http/`, no endpoint file names
//! another: they share only the modules in [`HTTP_SHARED`]. And the root of `src/` holds at most
//! [`MAX_ROOT_FILES`] files, every folder's `mod.rs` opening with a line on what it owns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Two files of one folder that genuinely share a type both ways (none today).
const ALLOWED_SIBLING_LOOPS: &[(&str, &str)] = &[];

/// Module path (`http::token`) of each file under `src/`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts = vec![];
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The file's code: without line comments and without its `#[cfg(test)] mod tests { ... }`.
fn code(text: &str) -> String {
    let mut text = text.to_owned();
    if let Some(start) = text.find("#[cfg(test)]\nmod tests {") {
        let open = start + text[start..].find('{').unwrap_or(0);
        let mut depth = 0;
        let mut end = text.len();
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(start..end, "");
    }
    without_comments_and_literals(&text)
}

/// Every path a file names through `crate::` or `super::`, expanded from `{...}` groups, as
/// absolute module paths (segments).
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let start_of_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let prefix = if !start_of_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut base: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let mut len = 0;
            let mut r = rest;
            while let Some(after) = r.strip_prefix("super::") {
                base.pop();
                len += "super::".len();
                r = after;
            }
            Some((base, len))
        } else {
            None
        };
        let Some((base, len)) = prefix else {
            i += 1;
            continue;
        };
        let (paths, consumed) = parse_tree(&code[i + len..]);
        for p in paths {
            let mut full = base.clone();
            full.extend(p);
            found.push(full);
        }
        i += len + consumed.max(1);
    }
    found
}

/// Parse `a::b::{c, d::e}` (or `a::b::c`, or `{a, b}`) at the start of `s`; the paths and bytes consumed.
fn parse_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let b = s.as_bytes();
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'{') {
            i += 1;
            let mut out = Vec::new();
            loop {
                while i < b.len() && matches!(b[i], b' ' | b'\n' | b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = parse_tree(&s[i..]);
                for p in inner {
                    let mut full = segments.clone();
                    full.extend(p);
                    out.push(full);
                }
                i += used.max(1);
                // Skip `as alias` and anything up to the next separator.
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
            }
            return (out, i);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return (vec![segments], i);
        }
        segments.push(s[start..i].to_owned());
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![segments], i);
        }
    }
}

/// The file a path lands in: the longest prefix that is a module.
fn resolve<'a>(path: &[String], modules: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    (0..=path.len()).rev().find_map(|n| {
        let key = path[..n].join("::");
        modules.get_key_value(&key).map(|(k, _)| k.as_str())
    })
}

/// The wings: one feature each.
const WINGS: &[&str] = &["signin", "tokens", "openid", "clients", "catalog", "grant"];
/// The wings the gateway may use: it verifies tokens, and knows nothing else of the authorization server.
const GATEWAY_WINGS: &[&str] = &["tokens"];
/// The modules of `http/` that its endpoint files share (everything else there is an endpoint).
const HTTP_SHARED: &[&str] =
    &["http", "http::browser", "http::extract", "http::pages", "http::client_auth", "http::rate_limit"];
/// Files at the root of `src/`.
const MAX_ROOT_FILES: usize = 8;

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

fn layer(module: &str) -> &'static str {
    match top(module) {
        "" | "cli" | "server" | "state" => "top",
        "http" | "gateway" => "http",
        "web" => "web",
        "platform" => "platform",
        "config" => "config",
        "oauth" => "oauth",
        "store" => "store",
        wing if WINGS.contains(&wing) => "wing",
        _ => "unknown",
    }
}

/// Whether `from` may name `to`.
fn may_name(from: &str, to: &str) -> bool {
    let below = |allowed: &[&str]| allowed.contains(&layer(to));
    match (top(from), layer(from)) {
        (_, "top") => true,
        ("gateway", _) => {
            matches!(top(to), "gateway" | "web" | "platform" | "config" | "oauth") || GATEWAY_WINGS.contains(&top(to))
        }
        ("http", _) => {
            below(&["http", "web", "wing", "platform", "config", "oauth", "store"]) && top(to) != "gateway"
                || to == "state"
        }
        (_, "web") => below(&["web", "platform", "config", "oauth"]),
        (_, "wing") => below(&["wing", "platform", "config", "oauth", "store"]),
        (_, "platform") => below(&["platform", "config", "oauth", "store"]),
        (_, "config") => below(&["config", "oauth"]),
        (_, "store") => below(&["store", "oauth"]),
        (_, "oauth") => below(&["oauth"]),
        _ => false,
    }
}

/// Paths named through a module imported by `use`: after `use crate::store;`, `store::keys::X`
/// names `store::keys`.
fn aliased_paths(code: &str, named: &[Vec<String>], modules: &BTreeMap<String, PathBuf>) -> Vec<Vec<String>> {
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in named {
        let path: Vec<String> = match path.last().map(String::as_str) {
            Some("self") => path[..path.len() - 1].to_vec(),
            _ => path.clone(),
        };
        if let Some(last) = path.last()
            && modules.contains_key(&path.join("::"))
        {
            aliases.insert(last.clone(), path.clone());
        }
    }
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (alias, full) in &aliases {
        let needle = format!("{alias}::");
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let at = from + pos;
            from = at + needle.len();
            let before = if at == 0 { b' ' } else { bytes[at - 1] };
            if before.is_ascii_alphanumeric() || before == b'_' || before == b':' {
                continue;
            }
            let (paths, _) = parse_tree(&code[from..]);
            for p in paths {
                let mut path = full.clone();
                path.extend(p);
                found.push(path);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut deps = BTreeMap::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).unwrap();
        let mut set = BTreeSet::new();
        let code = code(&text);
        let mut named = named_paths(module, &code);
        named.extend(aliased_paths(&code, &named, &modules));
        for named in named {
            if let Some(target) = resolve(&named, &modules)
                && target != module
                && !target.is_empty()
                // A folder's mod.rs names its children with `pub mod`; that is not a use.
                && !(target.starts_with(&format!("{module}::")) && named.len() == target.split("::").count() && module_declares(&text, target))
            {
                set.insert(target.to_owned());
            }
        }
        deps.insert(module.clone(), set);
    }
    deps
}

fn module_declares(text: &str, target: &str) -> bool {
    let last = target.rsplit("::").next().unwrap_or("");
    text.contains(&format!("mod {last};"))
}

/// Strongly connected components with more than one file (Tarjan).
fn loops(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.deps.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
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
        deps,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        next: 0,
        out: vec![],
    };
    for v in deps.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_scanner_reads_grouped_and_relative_paths() {
    let paths = named_paths(
        "http::token",
        "use crate::{a::{b, c as d}, e};\nuse super::browser::{self, X};\nlet x = crate::f::g(1);",
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c", "e", "http::browser::self", "http::browser::X", "f::g"]);
    let deps: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(loops(&deps), vec![vec!["a".to_owned(), "b".to_owned()]]);
}

#[test]
fn no_import_loops_between_files() {
    let deps = graph();
    let bad: Vec<Vec<String>> = loops(&deps)
        .into_iter()
        .filter(|comp| {
            !(comp.len() == 2
                && ALLOWED_SIBLING_LOOPS
                    .iter()
                    .any(|(a, b)| (comp[0] == *a && comp[1] == *b) || (comp[0] == *b && comp[1] == *a)))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "import loops in src/ (each line one loop):\n{}",
        bad.iter().map(|c| c.join(" ")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn dependencies_point_down() {
    let deps = graph();
    let mut bad = Vec::new();
    for (from, targets) in &deps {
        for to in targets {
            if !may_name(from, to) {
                bad.push(format!("{from} ({}) names {to} ({})", layer(from), layer(to)));
            }
        }
    }
    assert!(bad.is_empty(), "dependencies that point up:\n{}", bad.join("\n"));
}

/// `code` without comments, and with string and char literals blanked (so neither their
/// braces nor the paths they mention count). Line structure is kept.
fn without_comments_and_literals(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank =
        |out: &mut Vec<u8>, part: &[u8]| out.extend(part.iter().map(|c| if *c == b'\n' { b'\n' } else { b' ' }));
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p)
        } else if rest.starts_with(b"/*") {
            rest.windows(2).position(|w| w == b"*/").map_or(b.len(), |p| i + p + 2)
        } else if rest.starts_with(b"r\"") || rest.starts_with(b"r#") {
            let hashes = rest[1..].iter().take_while(|c| **c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let start = 2 + hashes;
            rest[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| i + start + p + close.len())
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (i + j + 1).min(b.len())
        } else if rest[0] == b'\'' {
            // Char literals such as '{' or '\''; lifetimes ('a) are left alone.
            let len = if rest.get(1) == Some(&b'\\') { 4 } else { 3 };
            if rest.get(len - 1) == Some(&b'\'') { i + len } else { i }
        } else {
            i
        };
        if end > i {
            blank(&mut out, &b[i..end]);
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (file, function, lines) of every function body in `src/`.
fn function_lengths() -> Vec<(String, String, usize)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for path in modules(&src).into_values() {
        let code = code(&std::fs::read_to_string(&path).unwrap());
        let lines: Vec<&str> = code.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let Some(at) = t.find("fn ") else { continue };
            let head = &t[..at];
            if !head
                .split_whitespace()
                .all(|w| matches!(w, "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe"))
            {
                continue;
            }
            let name: String = t[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // From the line of `fn` to the line that closes its body.
            let mut depth = 0i32;
            let mut opened = false;
            'scan: for (m, l) in lines.iter().enumerate().skip(n) {
                for c in l.chars() {
                    match c {
                        ';' if !opened && depth == 0 => break 'scan,
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => {
                            depth -= 1;
                            if opened && depth == 0 {
                                out.push((path.display().to_string(), name.clone(), m - n + 1));
                                break 'scan;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

#[test]
fn no_function_over_100_lines() {
    let long: Vec<String> = function_lengths()
        .into_iter()
        .filter(|(_, _, lines)| *lines > 100)
        .map(|(file, name, lines)| format!("{file}: {name} has {lines} lines"))
        .collect();
    assert!(long.is_empty(), "functions over 100 lines:\n{}", long.join("\n"));
    assert!(function_lengths().iter().any(|(_, name, _)| name == "router"), "the scanner finds functions");
}

#[test]
fn the_authorization_endpoint_adapter_stays_small() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/authorize.rs");
    let lines = std::fs::read_to_string(path).unwrap().lines().count();
    assert!(lines < 200, "src/http/authorize.rs has {lines} lines; the rules belong in src/grant/authorization.rs");
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let unknown: Vec<String> = modules(&src).into_keys().filter(|m| layer(m) == "unknown").collect();
    assert!(unknown.is_empty(), "modules in no layer (add the wing to WINGS, or move them): {unknown:?}");
}

#[test]
fn no_endpoint_names_another() {
    let mut bad = Vec::new();
    for (from, targets) in &graph() {
        if top(from) != "http" || HTTP_SHARED.contains(&from.as_str()) {
            continue;
        }
        for to in targets {
            if top(to) == "http" && !HTTP_SHARED.contains(&to.as_str()) {
                bad.push(format!("{from} names {to}"));
            }
        }
    }
    assert!(bad.is_empty(), "endpoint files that use another endpoint's functions:\n{}", bad.join("\n"));
}

#[test]
fn the_root_is_small_and_every_folder_says_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = 0;
    let mut undocumented = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
        }
    }
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let doc = std::fs::read_to_string(path.join("mod.rs")).unwrap_or_default();
                if !doc.starts_with("//! ") {
                    undocumented.push(path.display().to_string());
                }
                stack.push(path);
            }
        }
    }
    assert!(files <= MAX_ROOT_FILES, "{files} files at the root of src/ (at most {MAX_ROOT_FILES})");
    assert!(undocumented.is_empty(), "folders whose mod.rs does not open with a //! line: {undocumented:?}");
}

#[test]
fn the_rules_refuse_what_the_architecture_forbids() {
    for (from, to) in [
        ("gateway", "http::token"),
        ("gateway::guard", "signin::session"),
        ("gateway", "state"),
        ("web::error", "grant"),
        ("web::health", "state"),
        ("platform::audit", "tokens"),
        ("platform::jwks", "web::error"),
        ("signin::journey", "http::pages"),
        ("tokens", "state"),
        ("config", "platform::metrics"),
        ("store::users", "signin"),
        ("oauth::scope", "store"),
        ("http::login", "gateway"),
    ] {
        assert!(!may_name(from, to), "{from} may not name {to}");
    }
    for (from, to) in [
        ("gateway::verifier", "tokens::keys"),
        ("gateway", "web::transport"),
        ("http::login", "signin::journey"),
        ("http::login", "state"),
        ("signin::journey", "grant::authorization"),
        ("platform::audit", "store::audit"),
        ("web::metrics", "platform::metrics"),
        ("cli::gateway", "gateway"),
    ] {
        assert!(may_name(from, to), "{from} may name {to}");
    }
}
