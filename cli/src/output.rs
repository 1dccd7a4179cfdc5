//! How `arcctl` prints an answer: a table (or, for one object, YAML) for
//! people; `-o wide` adds columns; `-o json` and `-o yaml` give the API's
//! whole answer for scripts.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

/// `--color`: when tables and errors are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set or TERM is dumb
    Auto,
    Always,
    Never,
}

/// Whether stdout's tables are coloured (decided once at start).
static COLOUR_OUT: AtomicBool = AtomicBool::new(false);
/// Whether stderr's error line is coloured.
static COLOUR_ERR: AtomicBool = AtomicBool::new(false);

/// Decides, once, whether to colour: `auto` colours a stream only when it is
/// a terminal, `NO_COLOR` is unset or empty, and `TERM` is not `dumb`.
pub(crate) fn set_colour(choice: ColorChoice) {
    let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let (out, err) = match choice {
        ColorChoice::Always => (true, true),
        ColorChoice::Never => (false, false),
        ColorChoice::Auto => (allowed && std::io::stdout().is_terminal(), allowed && std::io::stderr().is_terminal()),
    };
    COLOUR_OUT.store(out, Ordering::Relaxed);
    COLOUR_ERR.store(err, Ordering::Relaxed);
}

/// The error line's `error:` prefix, red when stderr is coloured.
pub(crate) fn error_prefix() -> &'static str {
    if COLOUR_ERR.load(Ordering::Relaxed) { "\x1b[1;31merror:\x1b[0m" } else { "error:" }
}

const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The colour of a cell that names a state, if it does: green for healthy,
/// yellow for in between, red for broken, dim for over.
fn state_colour(cell: &str) -> Option<&'static str> {
    match cell {
        "up" | "active" | "open" | "caught up" | "delivered" | "ready" => Some(GREEN),
        "draining" | "catching up" | "pending" | "rebuild requested" | "joining" | "requested" => Some(YELLOW),
        "lost" | "stale" | "dead" | "down" | "disabled" | "failed" => Some(RED),
        "closed" | "left" | "deregistered" => Some(DIM),
        _ => None,
    }
}

/// `-o`: the output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Human tables; one object as YAML
    Table,
    /// Tables with every column
    Wide,
    /// The API's JSON answer, pretty-printed (`--json` is the same)
    Json,
    /// The API's answer as YAML
    Yaml,
}

impl Format {
    /// Tables (narrow or wide) rather than a document.
    pub(crate) fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// One column of a list: its heading, whether only `-o wide` shows it, and
/// how a row's cell is read from the item.
pub(crate) struct Col {
    pub head: &'static str,
    pub wide: bool,
    pub cell: fn(&Value) -> String,
}

impl Col {
    pub(crate) const fn new(head: &'static str, cell: fn(&Value) -> String) -> Self {
        Self { head, wide: false, cell }
    }

    pub(crate) const fn wide(head: &'static str, cell: fn(&Value) -> String) -> Self {
        Self { head, wide: true, cell }
    }
}

/// Prints `items` under `cols` (wide columns only when `format` is wide);
/// `empty` when there is nothing.
pub(crate) fn list(
    out: &mut impl Write,
    format: Format,
    items: &[Value],
    cols: &[Col],
    empty: &str,
) -> std::io::Result<()> {
    if items.is_empty() {
        return writeln!(out, "{empty}");
    }
    let shown: Vec<&Col> = cols.iter().filter(|c| !c.wide || format == Format::Wide).collect();
    let mut rows = vec![shown.iter().map(|c| c.head.to_owned()).collect::<Vec<_>>()];
    rows.extend(items.iter().map(|item| shown.iter().map(|c| (c.cell)(item)).collect()));
    table(out, &rows)
}

/// Left-aligned columns two spaces apart, no trailing blanks; coloured
/// (bold headings, states by health) when stdout is (see [`set_colour`]).
pub(crate) fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    for line in render(rows, COLOUR_OUT.load(Ordering::Relaxed)) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The lines of [`table`]; widths count what is visible, never the colour codes.
fn render(rows: &[Vec<String>], colour: bool) -> Vec<String> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r.get(c).map_or(0, |cell| cell.chars().count())).max().unwrap_or(0))
        .collect();
    let mut lines = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        let mut pending_blanks = 0;
        for (cell, w) in r.iter().zip(&widths) {
            line.extend(std::iter::repeat_n(' ', pending_blanks));
            let code = if !colour {
                None
            } else if i == 0 {
                Some(BOLD)
            } else {
                state_colour(cell)
            };
            match code {
                Some(code) if !cell.is_empty() => {
                    line.push_str(code);
                    line.push_str(cell);
                    line.push_str(RESET);
                }
                _ => line.push_str(cell),
            }
            pending_blanks = w.saturating_sub(cell.chars().count()) + 2;
        }
        lines.push(line);
    }
    lines
}

/// A cell: strings bare, null as `-`, the rest as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The whole answer as a document (`-o json` / `-o yaml`).
pub(crate) fn document(out: &mut impl Write, format: Format, v: &Value) -> std::io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(v).map_err(std::io::Error::other)?),
        _ => out.write_all(yaml(v).as_bytes()),
    }
}

/// `v` as a YAML 1.2 document (block style). Strings stay plain where YAML
/// reads them back as the same string, else they are double-quoted with
/// JSON's escapes (which YAML's double-quoted style shares).
pub(crate) fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => yaml_seq(&mut out, a, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn yaml_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a sequence item shares the "- " line.
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        out.push_str(&yaml_string(k));
        out.push(':');
        yaml_value(out, v, indent);
    }
}

fn yaml_seq(out: &mut String, a: &[Value], indent: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => yaml_map(out, m, indent + 2),
            Value::Array(inner) if !inner.is_empty() => yaml_seq(out, inner, indent + 2),
            scalar => {
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

/// A map value after its `key:`.
fn yaml_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_seq(out, a, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string, plain when that is unambiguous, else double-quoted.
fn yaml_string(s: &str) -> String {
    if plain_is_safe(s) { s.to_owned() } else { serde_json::Value::String(s.to_owned()).to_string() }
}

/// Whether `s` written plain reads back as the string `s` (conservative:
/// a small safe alphabet, nothing YAML would read as another type).
fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let safe_char = |c: char| c.is_ascii_alphanumeric() || "_-./@+:".contains(c) || c == ' ';
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/')
        || !s.chars().all(safe_char)
        || s.ends_with(' ')
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
    {
        return false;
    }
    // Words YAML (1.1 or 1.2 readers) would take for booleans or null.
    let lower = s.to_ascii_lowercase();
    !matches!(lower.as_str(), "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "nan" | "inf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_nests_maps_and_sequences_in_block_style() {
        // Keys in alphabetical order at every level: serde_json's map keeps
        // them sorted unless its preserve_order feature is on.
        let v = json!({
            "closed_at": null,
            "count": 2,
            "empty": {},
            "people": [{"identity": "alice", "tracks": [{"kind": "video"}]}, {"identity": "bob", "tracks": []}],
            "quotas": {"max_rooms": 10},
            "room_id": "rm_1",
            "tags": ["a", ["b", "c"]],
        });
        let expected = "\
closed_at: null
count: 2
empty: {}
people:
  - identity: alice
    tracks:
      - kind: video
  - identity: bob
    tracks: []
quotas:
  max_rooms: 10
room_id: rm_1
tags:
  - a
  - - b
    - c
";
        assert_eq!(yaml(&v), expected);
    }

    #[test]
    fn strings_that_would_read_as_something_else_are_quoted() {
        for s in [
            "true",
            "No",
            "null",
            "12",
            "1.5",
            "",
            " lead",
            "trail ",
            "a: b",
            "x #y",
            "-dash",
            "[x]",
            "{x}",
            "é",
            "line\nbreak",
            "*ref",
            "&anchor",
            "!tag",
            "%p",
            "'q'",
            "\"dq\"",
        ] {
            let out = yaml_string(s);
            assert!(out.starts_with('"'), "{s:?} → {out}");
            let back: String = serde_json::from_str(&out).expect("JSON-quoted");
            assert_eq!(back, s);
        }
        for s in ["rm_0193", "room.created", "http://127.0.0.1:7880/x", "a b", "node-dev", "/v1/rooms"] {
            assert_eq!(yaml_string(s), s);
        }
    }

    #[test]
    fn colours_mark_headings_and_states_without_moving_columns() {
        let rows = vec![
            vec!["NODE".to_owned(), "STATE".to_owned(), "SESSIONS".to_owned()],
            vec!["node-a".to_owned(), "up".to_owned(), "3".to_owned()],
            vec!["node-bb".to_owned(), "lost".to_owned(), "0".to_owned()],
        ];
        let plain = super::render(&rows, false);
        let coloured = super::render(&rows, true);
        assert_eq!(plain[1], "node-a   up     3");
        assert_eq!(coloured[0], "\x1b[1mNODE\x1b[0m     \x1b[1mSTATE\x1b[0m  \x1b[1mSESSIONS\x1b[0m");
        assert_eq!(coloured[1], "node-a   \x1b[32mup\x1b[0m     3");
        assert_eq!(coloured[2], "node-bb  \x1b[31mlost\x1b[0m   0");
        // Without the codes, the coloured lines are the plain ones.
        let strip = |l: &str| {
            let mut out = String::new();
            let mut in_code = false;
            for c in l.chars() {
                match (in_code, c) {
                    (false, '\x1b') => in_code = true,
                    (true, 'm') => in_code = false,
                    (false, c) => out.push(c),
                    _ => {}
                }
            }
            out
        };
        assert_eq!(coloured.iter().map(|l| strip(l)).collect::<Vec<_>>(), plain);
    }

    #[test]
    fn tables_pad_to_the_widest_cell_and_wide_adds_columns() {
        let items = vec![json!({"a": "x", "b": 1}), json!({"a": "longer", "b": null})];
        let cols = [Col::new("A", |v| text(&v["a"])), Col::wide("B", |v| text(&v["b"]))];
        let mut narrow = Vec::new();
        list(&mut narrow, Format::Table, &items, &cols, "none").expect("write");
        assert_eq!(String::from_utf8_lossy(&narrow), "A\nx\nlonger\n");
        let mut wide = Vec::new();
        list(&mut wide, Format::Wide, &items, &cols, "none").expect("write");
        assert_eq!(String::from_utf8_lossy(&wide), "A       B\nx       1\nlonger  -\n");
        let mut empty = Vec::new();
        list(&mut empty, Format::Table, &[], &cols, "no rows").expect("write");
        assert_eq!(String::from_utf8_lossy(&empty), "no rows\n");
    }
}
