//! JUnit XML for CI systems: one failing test case per leak stack (its stack in the failure's
//! text), one skipped test case per suppressed stack of a failing kind, and one passing test
//! case when nothing failed. Which kinds fail is `--fail-on`'s choice (the report's `check`),
//! definitely and indirectly lost by default; a report without leak kinds (`record` without
//! `--scan`) fails on every heap stack still outstanding.
use std::io::{self, Write};

use quick_xml::{Writer, events::BytesText};

use super::{Kind, Report, Stack};
use super::{DEFAULT_FAIL_ON, LeakKind};

enum Outcome {
    Failed,
    Skipped(String),
}

pub fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let fail_on: Vec<LeakKind> = report.check.as_ref().map_or(DEFAULT_FAIL_ON.to_vec(), |check| check.fail_on.clone());
    let classified = report.summary.leaks.is_some();
    let cases: Vec<(&Stack, Outcome)> = report
        .stacks
        .iter()
        .filter(|stack| stack.kind == Kind::Heap)
        .filter_map(|stack| {
            let failing_kind = !classified || stack.leak_kind.is_some_and(|kind| fail_on.contains(&kind));
            let outcome = match &stack.suppressed_by {
                Some(by) => Outcome::Skipped(by.clone()),
                None => Outcome::Failed,
            };
            failing_kind.then_some((stack, outcome))
        })
        .collect();
    let failures = cases.iter().filter(|(_, outcome)| matches!(outcome, Outcome::Failed)).count();
    let skipped = cases.len() - failures;
    let tests = cases.len().max(1);
    let suite = format!("memtrace: {}", report.target.command.join(" "));
    let counts = [("tests", tests.to_string()), ("failures", failures.to_string()), ("skipped", skipped.to_string())];

    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
    let mut writer = Writer::new_with_indent(&mut *out, b' ', 2);
    writer
        .create_element("testsuites")
        .with_attribute(("name", "memtrace"))
        .with_attributes(counts.iter().map(|(key, value)| (*key, value.as_str())))
        .write_inner_content(|writer| {
            writer
                .create_element("testsuite")
                .with_attribute(("name", suite.as_str()))
                .with_attributes(counts.iter().map(|(key, value)| (*key, value.as_str())))
                .with_attribute(("time", format!("{:.3}", report.duration_seconds).as_str()))
                .write_inner_content(|writer| {
                    if cases.is_empty() {
                        writer.create_element("testcase").with_attribute(("classname", "memtrace")).with_attribute(("name", "no leaks")).write_empty()?;
                    }
                    for (stack, outcome) in &cases {
                        let what = stack.leak_kind.map_or("outstanding", LeakKind::words);
                        let summary = format!("{} bytes in {} blocks {what}", stack.bytes, stack.allocations);
                        let name = format!("{summary} from {} (pid {})", origin(stack), stack.pid);
                        let case = writer
                            .create_element("testcase")
                            .with_attribute(("classname", format!("memtrace.{}", stack.leak_kind.map_or("outstanding", LeakKind::name)).as_str()))
                            .with_attribute(("name", name.as_str()));
                        match outcome {
                            Outcome::Failed => case.write_inner_content(|writer| {
                                writer
                                    .create_element("failure")
                                    .with_attribute(("message", summary.as_str()))
                                    .with_attribute(("type", stack.leak_kind.map_or("outstanding", LeakKind::name)))
                                    .write_text_content(BytesText::new(&stack_text(stack)))?;
                                Ok(())
                            })?,
                            Outcome::Skipped(by) => case.write_inner_content(|writer| {
                                writer.create_element("skipped").with_attribute(("message", format!("suppressed by {by}").as_str())).write_empty()?;
                                Ok(())
                            })?,
                        };
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
    writeln!(out)
}

/// The innermost frame with a name: where the leak was allocated.
fn origin(stack: &Stack) -> String {
    stack
        .frames
        .iter()
        .find_map(|frame| {
            let function = frame.function.as_deref()?;
            Some(match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!("{function} at {file}:{line}"),
                _ => function.to_owned(),
            })
        })
        .or_else(|| stack.unavailable.as_ref().map(|why| format!("an unknown stack ({why})")))
        .unwrap_or_else(|| "an unnamed stack".to_owned())
}

fn stack_text(stack: &Stack) -> String {
    let mut text = String::new();
    for (depth, frame) in stack.frames.iter().enumerate() {
        text.push_str(&format!("#{depth} {} in {}", frame.address, frame.function.as_deref().unwrap_or("??")));
        if let (Some(file), Some(line)) = (&frame.file, frame.line) {
            text.push_str(&format!(" at {file}:{line}"));
        }
        if let Some(module) = &frame.module {
            text.push_str(&format!(" ({module})"));
        }
        text.push('\n');
    }
    text
}
