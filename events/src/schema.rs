//! JSON Schemas of the log format, generated from the Rust types.
//!
//! `schemas/events/envelope.json` describes a stored record; one file per event
//! type and version (`room.created.v1.json`, …) describes its `data`. The test
//! `events/tests/schemas.rs` fails when the checked-in files differ from what
//! this module generates; `ARC_UPDATE_SCHEMAS=1 cargo test -p arc-events --test schemas`
//! rewrites them.

use crate::envelope::RawEvent;
use crate::event::Event;

use std::path::Path;

/// One generated schema file: its name in its directory and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub file_name: String,
    pub contents: String,
}

/// A schema as checked in: pretty JSON and a final newline.
pub fn pretty(schema: &schemars::Schema) -> String {
    // INVARIANT: a schemars::Schema is a JSON value and always serializes.
    let mut text = serde_json::to_string_pretty(schema).expect("schema serializes");
    text.push('\n');
    text
}

/// Every schema file, sorted by name.
pub fn generate() -> Vec<SchemaFile> {
    let mut files: Vec<SchemaFile> = Event::types()
        .into_iter()
        .map(|t| SchemaFile {
            file_name: format!("{}.v{}.json", t.type_name, t.version),
            contents: pretty(&(t.schema)()),
        })
        .collect();
    files.push(SchemaFile { file_name: "envelope.json".into(), contents: pretty(&schemars::schema_for!(RawEvent)) });
    files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    files
}

/// Replaces the `.json` files in `dir` with `generated` (the
/// `ARC_UPDATE_SCHEMAS=1` path of the drift tests).
pub fn write_dir(dir: &Path, generated: &[SchemaFile]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(path)?;
        }
    }
    for f in generated {
        std::fs::write(dir.join(&f.file_name), &f.contents)?;
    }
    Ok(())
}

/// Compares the `.json` files in `dir` with `generated`: `Err` names the
/// first difference (files missing or extra, or a stale file).
pub fn diff_dir(dir: &Path, generated: &[SchemaFile]) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut on_disk: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = generated.iter().map(|f| f.file_name.clone()).collect();
    expected.sort();
    if on_disk != expected {
        return Err(format!("schema files differ: on disk {on_disk:?}, generated {expected:?}"));
    }
    for f in generated {
        let path = dir.join(&f.file_name);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text != f.contents {
            return Err(format!("{} is out of date", path.display()));
        }
    }
    Ok(())
}
