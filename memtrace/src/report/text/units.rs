//! How text shows numbers and frames: thousands separators, plurals, one line per frame.
use std::path::Path;

use crate::report::{ReportFrame, printable::printable};

pub fn frame_line(frame: &ReportFrame) -> String {
    let mut line = printable(&frame.address).into_owned();
    line.push_str(" in ");
    line.push_str(&printable(frame.function.as_deref().unwrap_or("??")));
    if frame.inlined {
        line.push_str(" (inlined)");
    }
    if let Some(file) = &frame.file {
        line.push_str(&format!(" at {}", printable(file)));
        if let Some(number) = frame.line {
            line.push_str(&format!(":{number}"));
        }
    }
    match (&frame.module, &frame.module_offset) {
        (Some(module), Some(offset)) if frame.function.is_none() => {
            line.push_str(&format!(" ({}+{})", printable(basename(module)), printable(offset)))
        }
        (Some(module), _) => line.push_str(&format!(" ({})", printable(basename(module)))),
        (None, _) => {}
    }
    line
}

fn basename(path: &str) -> &str {
    Path::new(path).file_name().and_then(|name| name.to_str()).unwrap_or(path)
}

pub fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{} {noun}s", thousands(count)) }
}

pub fn bytes(count: u64) -> String {
    if count == 1 { "1 byte".to_owned() } else { format!("{} bytes", thousands(count)) }
}

/// 1234567 as "1,234,567".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(plural(1, "allocation"), "1 allocation");
        assert_eq!(bytes(4096), "4,096 bytes");
    }

    #[test]
    fn unnamed_frames_show_module_and_offset() {
        let frame = ReportFrame {
            address: "0x7f00".into(),
            function: None,
            file: None,
            line: None,
            module: Some("/usr/lib/libfoo.so".into()),
            module_offset: Some("0x1234".into()),
            inlined: false,
        };
        assert_eq!(frame_line(&frame), "0x7f00 in ?? (libfoo.so+0x1234)");
    }
}
