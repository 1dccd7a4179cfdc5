//! JSON Schemas of the node protocol's wire form, generated from the Rust
//! types: `schemas/node/request.v<N>.json` and `reply.v<N>.json`.
//! `tests/schemas.rs` fails when the checked-in files differ;
//! `ARC_UPDATE_SCHEMAS=1 cargo test -p arc-nodeproto --test schemas` rewrites them.

use arc_events::schema::{SchemaFile, pretty};

use crate::{NodeReply, NodeRequest, PROTOCOL_VERSION, RoomSignal, Wire};

/// Every schema file, sorted by name.
pub fn generate() -> Vec<SchemaFile> {
    let mut files = vec![
        SchemaFile {
            file_name: format!("reply.v{PROTOCOL_VERSION}.json"),
            contents: pretty(&schemars::schema_for!(Wire<NodeReply>)),
        },
        SchemaFile {
            file_name: format!("request.v{PROTOCOL_VERSION}.json"),
            contents: pretty(&schemars::schema_for!(Wire<NodeRequest>)),
        },
        SchemaFile {
            file_name: format!("signal.v{PROTOCOL_VERSION}.json"),
            contents: pretty(&schemars::schema_for!(Wire<RoomSignal>)),
        },
    ];
    files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    files
}
