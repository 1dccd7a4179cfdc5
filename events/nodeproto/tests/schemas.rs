//! The checked-in JSON Schemas in `schemas/node/` must equal the generated ones,
//! and messages must validate against them by shape (round trips).

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/node")
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let generated = arc_nodeproto::schema::generate();
    let dir = dir();
    if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(&dir).expect("create schemas/node");
        for entry in std::fs::read_dir(&dir).expect("read schemas/node") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(path).expect("remove stale schema");
            }
        }
        for f in &generated {
            std::fs::write(dir.join(&f.file_name), &f.contents).expect("write schema");
        }
        return;
    }
    let regen = "regenerate with: ARC_UPDATE_SCHEMAS=1 cargo test -p arc-nodeproto --test schemas";
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {regen}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let expected: Vec<String> = generated.iter().map(|f| f.file_name.clone()).collect();
    assert_eq!(on_disk, expected, "schema files differ from the protocol types; {regen}");
    for f in &generated {
        let text = std::fs::read_to_string(dir.join(&f.file_name)).expect("read schema");
        assert!(text == f.contents, "schemas/node/{} is out of date; {regen}", f.file_name);
    }
}
