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
        // By start; the entries never overlap, so they are in end order too and those a new
        // one overlaps are contiguous: each line costs a logarithm, not a pass over all kept
        // (a JIT's map has millions of lines, and the traced process writes it).
        let mut functions: std::collections::BTreeMap<u64, (u64, String)> = std::collections::BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.trim().splitn(3, ' ');
            let (Some(start), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let (Some(start), Some(size)) = (hex(start), hex(size)) else { continue };
            let end = start.saturating_add(size);
            if end == start {
                // Empty (or at the very last address): it names no address.
                continue;
            }
            let before = functions.range(..start).next_back().filter(|(_, (other_end, _))| *other_end > start);
            let overlapped: Vec<u64> = before
                .map(|(&other_start, _)| other_start)
                .into_iter()
                .chain(functions.range(start..end).map(|(&other_start, _)| other_start))
                .collect();
            for other_start in overlapped {
                functions.remove(&other_start);
            }
            functions.insert(start, (end, name.trim().to_owned()));
        }
        Self { functions: functions.into_iter().map(|(start, (end, name))| (start, end, name)).collect() }
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
