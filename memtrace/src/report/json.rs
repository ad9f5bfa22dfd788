//! JSON: the `Report` serialized as is (schema in docs/report.schema.json, derived from the
//! types by examples/schema.rs).
use std::io::{self, Write};

use super::Report;

pub fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}
