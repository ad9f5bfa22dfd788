//! Writes the JSON Schema of memtrace's JSON report, derived from the `Report` types
//! (`schemars::JsonSchema`, which follows their serde attributes), to `docs/report.schema.json`
//! or to the path given.
//!
//! `cargo xtask schema` runs it (`cargo run -p memtrace --example schema`). `tests/docs.rs`
//! includes this file and fails when the committed schema differs from [`schema_json`].
use std::path::{Path, PathBuf};

/// Where the schema is committed.
pub fn committed_path() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("memtrace/ is in the workspace");
    workspace.join("docs/report.schema.json")
}

/// The schema, as the committed file holds it: pretty-printed, ending in a newline. It
/// describes what memtrace writes (serde's serialize side): a field is required when it is
/// always written, even where `memtrace report` would load a report without it.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12().for_serialize().into_generator();
    let schema = generator.into_root_schema_for::<memtrace::report::Report>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

fn main() {
    let path = std::env::args_os().nth(1).map_or_else(committed_path, PathBuf::from);
    if let Err(error) = std::fs::write(&path, schema_json()) {
        eprintln!("schema: cannot write {}: {error}", path.display());
        std::process::exit(1);
    }
    println!("{}", path.display());
}
