//! One module's unwind table, from its ELF file: `.eh_frame` first, then `.debug_frame` (its
//! own, then its separate debug file's) only where `.eh_frame` leaves code uncovered; and its
//! loadable segments, to turn a mapping's addresses into the ELF addresses the table uses.
use std::{fs::File, path::PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ReadCache};

use super::{
    cfi::{self, EhFrameBases, SectionCounts, Span},
    table::Table,
};
use crate::symbolize::debuginfo::{self, DebugLinks};

/// A module's table and where it came from.
#[derive(Debug)]
pub struct ModuleTable {
    pub table: Table,
    pub counts: SectionCounts,
    /// The separate debug file whose `.debug_frame` filled gaps, if one did.
    pub debug_file: Option<PathBuf>,
}

/// (file offset, file size, virtual address) of each executable loadable segment.
pub type Segments = Vec<(u64, u64, u64)>;

/// Reads the executable loadable segments of an ELF file. Only those: a linker may pack
/// segments so that one file page holds the end of one and the start of the next, mapped
/// twice at two addresses, and only the executable one is the code's.
pub fn segments(file: &File) -> Result<Segments, String> {
    const PF_X: u32 = 1;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|error| error.to_string())?;
    Ok(elf
        .segments()
        .filter(|segment| matches!(segment.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
        .map(|segment| {
            let (offset, size) = segment.file_range();
            (offset, size, segment.address())
        })
        .collect())
}

/// The bias of a mapping of `segments`' file at `start` from file offset `offset`: an address
/// in it minus the bias is the ELF virtual address the table uses. `None` when no loadable
/// segment holds that offset.
pub fn bias(segments: &Segments, start: u64, offset: u64) -> Option<u64> {
    // A mapping starts at its segment's offset rounded down to a page.
    let &(file_offset, _, address) = segments.iter().find(|&&(file_offset, size, _)| {
        let page_start = file_offset & !0xfff;
        page_start <= offset && offset < file_offset.saturating_add(size)
    })?;
    // address_in_elf = mapped - start + offset - file_offset + address
    Some(start.wrapping_add(file_offset).wrapping_sub(offset).wrapping_sub(address))
}

/// Builds the table of the module in `file`, mapped from `module_path` (where its separate
/// debug file is looked for, under `debug_dirs`).
pub fn build(file: &File, module_path: &str, debug_dirs: &[PathBuf]) -> Result<ModuleTable, String> {
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|error| error.to_string())?;
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(format!("{:?} code: tables are built for x86-64 only", elf.architecture()));
    }
    let mut spans = Vec::new();
    let mut counts = SectionCounts::default();
    if let Some(section) = elf.section_by_name(".eh_frame") {
        let data = section.data().map_err(|error| format!(".eh_frame: {error}"))?;
        let address_of = |name: &str| elf.section_by_name(name).map_or(0, |section| section.address());
        let bases = EhFrameBases { eh_frame: section.address(), text: address_of(".text"), got: address_of(".got") };
        add(&mut counts, cfi::read_eh_frame(data, bases, &mut spans).map_err(|error| format!(".eh_frame: {error}"))?);
    }
    let mut debug_frame = Vec::new();
    if let Some(data) = debug_frame_of(&elf) {
        add(
            &mut counts,
            cfi::read_debug_frame(data, &mut debug_frame).map_err(|error| format!(".debug_frame: {error}"))?,
        );
    }
    let debug_file = debuginfo::find(&DebugLinks::read(&elf), module_path, debug_dirs);
    let mut used_debug_file = None;
    if let Some(debug) = &debug_file {
        match separate_debug_frame(&debug.file, &mut debug_frame) {
            Ok(Some(found)) => {
                add(&mut counts, found);
                used_debug_file = Some(debug.path.clone());
            }
            Ok(None) => {}
            Err(error) => log::debug!("no .debug_frame from {}: {error}", debug.path.display()),
        }
    }
    spans.extend(uncovered(&spans, debug_frame));
    let table = Table::from_spans(spans).map_err(|error| error.to_string())?;
    Ok(ModuleTable { table, counts, debug_file: used_debug_file })
}

fn add(total: &mut SectionCounts, counts: SectionCounts) {
    total.fdes += counts.fdes;
    total.bad_fdes += counts.bad_fdes;
    total.unsupported += counts.unsupported;
}

/// A file's `.debug_frame` bytes, when it has some (a separate debug file's sections of code
/// it does not hold are empty, `NOBITS`).
fn debug_frame_of<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<&'data [u8]> {
    let section = elf.section_by_name(".debug_frame")?;
    section.data().ok().filter(|data| !data.is_empty())
}

/// Appends the spans of a separate debug file's `.debug_frame`; `None` when it has none.
fn separate_debug_frame(file: &File, spans: &mut Vec<Span>) -> Result<Option<SectionCounts>, String> {
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|error| error.to_string())?;
    let Some(data) = debug_frame_of(&elf) else { return Ok(None) };
    cfi::read_debug_frame(data, spans).map(Some).map_err(|error| error.to_string())
}

/// The parts of `extra` that no span of `covered` covers.
fn uncovered(covered: &[Span], mut extra: Vec<Span>) -> Vec<Span> {
    if extra.is_empty() {
        return extra;
    }
    let mut ranges: Vec<(u64, u64)> = covered.iter().map(|span| (span.start, span.end)).collect();
    ranges.sort_unstable();
    extra.sort_by_key(|span| span.start);
    let mut kept = Vec::new();
    for span in extra {
        let mut start = span.start;
        // Covered ranges that may overlap [start, end): those starting before its end.
        let first = ranges.partition_point(|&(_, end)| end <= start);
        for &(covered_start, covered_end) in &ranges[first..] {
            if covered_start >= span.end || start >= span.end {
                break;
            }
            if covered_start > start {
                kept.push(Span { start, end: covered_start, rule: span.rule });
            }
            start = start.max(covered_end);
        }
        if start < span.end {
            kept.push(Span { start, ..span });
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::cfi::Rule;

    #[test]
    fn debug_frame_fills_only_what_eh_frame_leaves() {
        let rule = Rule::END;
        let covered = [Span { start: 10, end: 20, rule }, Span { start: 30, end: 40, rule }];
        let extra = vec![
            Span { start: 0, end: 50, rule: Rule::UNSUPPORTED },
            Span { start: 12, end: 18, rule: Rule::UNSUPPORTED },
        ];
        let kept: Vec<(u64, u64)> = uncovered(&covered, extra).iter().map(|span| (span.start, span.end)).collect();
        assert_eq!(kept, vec![(0, 10), (20, 30), (40, 50)]);
    }

    #[test]
    fn bias_takes_the_segment_of_the_mapped_offset() {
        // A shared library's code: offset 0x26000, address 0x26000.
        let segments = vec![(0x26000, 0x17b000, 0x26000)];
        assert_eq!(bias(&segments, 0x7f00_0002_6000, 0x26000), Some(0x7f00_0000_0000));
        assert_eq!(bias(&segments, 0x7f00_0000_0000, 0x900000), None);
        // Packed segments: code from offset 0x138e0 at address 0x148e0, mapped from its page
        // at 0x13000, which starts with the end of the read-only segment before it.
        let segments = vec![(0x138e0, 0x3e270, 0x148e0)];
        assert_eq!(bias(&segments, 0x5600_0001_4000, 0x13000), Some(0x5600_0000_0000));
    }

    #[test]
    fn only_executable_segments_are_read() {
        let file = File::open("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let segments = segments(&file).unwrap();
        assert_eq!(segments.len(), 1, "{segments:x?}");
        let (offset, _, address) = segments[0];
        assert_eq!(offset & 0xfff, address & 0xfff);
    }
}
