//! JSON Schemas of the log format, generated from the Rust types.
//!
//! `schemas/events/envelope.json` describes a stored record; one file per event
//! type and version (`room.created.v1.json`, …) describes its `data`. The test
//! `events/tests/schemas.rs` fails when the checked-in files differ from what
//! this module generates; `ARC_UPDATE_SCHEMAS=1 cargo test -p arc-events --test schemas`
//! rewrites them.

use crate::envelope::RawEvent;
use crate::event::Event;

/// One generated schema file: its name under `schemas/events/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub file_name: String,
    pub contents: String,
}

fn pretty(schema: &schemars::Schema) -> String {
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
