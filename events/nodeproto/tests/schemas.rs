//! The checked-in JSON Schemas in `schemas/node/` must equal the generated ones,
//! and messages must validate against them by shape (round trips).

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/node")
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let generated = arc_nodeproto::schema::generate();
    if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
        arc_events::schema::write_dir(&dir(), &generated).expect("write schemas/node");
        return;
    }
    if let Err(e) = arc_events::schema::diff_dir(&dir(), &generated) {
        panic!("{e}; regenerate with: ARC_UPDATE_SCHEMAS=1 cargo test -p arc-nodeproto --test schemas");
    }
}
