//! JIT-compiled code named through `/tmp/perf-PID.map`, the file JITs (the JVM with
//! perf-map-agent, V8's --perf-basic-prof, LuaJIT, .NET, ...) write for perf: one
//! `START SIZE NAME` line per function, START and SIZE in hexadecimal.
use std::{fs, io};

/// The JIT functions of one process, sorted by start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JitMap {
    functions: Vec<(u64, u64, String)>,
}

impl JitMap {
    /// Reads `/tmp/perf-PID.map`; `Ok(None)` when the process wrote none.
    pub fn read(pid: u32) -> io::Result<Option<Self>> {
        match fs::read_to_string(format!("/tmp/perf-{pid}.map")) {
            Ok(text) => Ok(Some(Self::parse(&text))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Malformed lines are skipped. A JIT that moves or frees code appends new lines: the
    /// later of two overlapping entries wins, as perf has it.
    pub fn parse(text: &str) -> Self {
        let mut functions: Vec<(u64, u64, String)> = Vec::new();
        for line in text.lines() {
            let mut fields = line.trim().splitn(3, ' ');
            let (Some(start), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let (Some(start), Some(size)) = (hex(start), hex(size)) else { continue };
            if size == 0 {
                continue;
            }
            let end = start.saturating_add(size);
            functions.retain(|&(other_start, other_end, _)| other_end <= start || other_start >= end);
            functions.push((start, end, name.trim().to_owned()));
        }
        functions.sort();
        Self { functions }
    }

    /// The JIT function holding `address`.
    pub fn name_of(&self, address: u64) -> Option<&str> {
        let index = self.functions.partition_point(|function| function.0 <= address).checked_sub(1)?;
        let (_, end, name) = &self.functions[index];
        (address < *end).then_some(name.as_str())
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

#[test]
fn lines_parse_and_later_entries_replace_overlapping_ones() {
    let map = JitMap::parse("7f0000001000 40 LazyCompile:~handle app.js:10\nnot a line\n7f0000002000 0x10 stub\n7f0000001000 20 recompiled\n");
    assert_eq!(map.name_of(0x7f00_0000_1010), Some("recompiled"));
    assert_eq!(map.name_of(0x7f00_0000_1030), None);
    assert_eq!(map.name_of(0x7f00_0000_200f), Some("stub"));
    assert_eq!(map.name_of(0x7f00_0000_2010), None);
}
