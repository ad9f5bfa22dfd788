//! A module's unwind table: its spans merged into rows sorted by address, with an explicit
//! no-information row wherever no FDE covers the code, and a page index so that the kernel
//! searches only the rows of one page (`UNWIND_PAGE_SHIFT`: 256 bytes of code).
use memtrace_common::unwind::{UNWIND_PAGE_SHIFT, UnwindRow, UnwindTable, row_for};

use super::cfi::{Rule, Span};

/// A module's rows and page index, ready to be copied into the kernel's arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The ELF virtual address of the first row: row pcs and pages count from here.
    pub base: u64,
    pub rows: Vec<UnwindRow>,
    /// Entry `p`: the index of the row covering `base + (p << UNWIND_PAGE_SHIFT)`; one more
    /// entry than pages,
    /// the last row's index (see `UnwindTable`).
    pub pages: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("no call-frame information")]
    Empty,
    #[error("its call-frame information spans more than 4 GiB")]
    TooWide,
}

impl Table {
    /// Merges spans (in any order, possibly overlapping: the lowest-starting FDE keeps an
    /// address) into rows. Neighbouring spans with one rule share a row.
    pub fn from_spans(mut spans: Vec<Span>) -> Result<Table, TableError> {
        spans.retain(|span| span.start < span.end);
        spans.sort_by_key(|span| (span.start, span.end));
        let first = spans.first().ok_or(TableError::Empty)?;
        let base = first.start;
        let relative = |address: u64| u32::try_from(address - base).map_err(|_| TableError::TooWide);
        let mut rows: Vec<UnwindRow> = Vec::new();
        let mut covered_to = base;
        let mut last_rule = None;
        for span in &spans {
            let start = span.start.max(covered_to);
            if start >= span.end {
                continue; // inside what an earlier FDE covers
            }
            if start > covered_to {
                rows.push(row(relative(covered_to)?, Rule::NO_INFO));
                last_rule = Some(Rule::NO_INFO);
            }
            if last_rule != Some(span.rule) {
                rows.push(row(relative(start)?, span.rule));
                last_rule = Some(span.rule);
            }
            covered_to = span.end;
        }
        rows.push(row(relative(covered_to)?, Rule::NO_INFO));
        let pages = page_index(&rows);
        Ok(Table { base, rows, pages })
    }

    /// The row covering ELF virtual address `address`, found as the kernel finds it (below the
    /// first row: no information).
    pub fn row_at(&self, address: u64) -> Option<UnwindRow> {
        row_for(
            &self.descriptor(0, 0),
            address,
            |page| self.pages.get(page as usize).copied(),
            |index| self.rows.get(index as usize).copied(),
        )
    }

    /// Where this table's rows and pages are, once copied into the kernel's arrays at
    /// `first_row` and `first_page`.
    pub fn descriptor(&self, first_row: u32, first_page: u32) -> UnwindTable {
        UnwindTable {
            base: self.base,
            first_row,
            rows: self.rows.len() as u32,
            first_page,
            pages: self.pages.len() as u32,
        }
    }
}

fn row(pc: u32, rule: Rule) -> UnwindRow {
    UnwindRow {
        pc,
        cfa_offset: rule.cfa_offset,
        rbp_offset: rule.rbp_offset,
        cfa_kind: rule.cfa_kind,
        rbp_kind: rule.rbp_kind,
    }
}

/// For each page from the first row's to the last row's, and one more, the row covering its
/// first byte (rows are sorted, the first at 0).
fn page_index(rows: &[UnwindRow]) -> Vec<u32> {
    let last_pc = rows.last().map_or(0, |row| row.pc);
    let pages = (last_pc >> UNWIND_PAGE_SHIFT) as usize + 2;
    let mut index = Vec::with_capacity(pages);
    let mut covering = 0usize;
    for page in 0..pages - 1 {
        let start = (page as u64) << UNWIND_PAGE_SHIFT;
        while rows.get(covering + 1).is_some_and(|next| u64::from(next.pc) <= start) {
            covering += 1;
        }
        index.push(covering as u32);
    }
    index.push(rows.len().saturating_sub(1) as u32);
    index
}

#[cfg(test)]
mod tests {
    use memtrace_common::unwind::{cfa_kind, rbp_kind};

    use super::*;

    fn rsp(offset: i32) -> Rule {
        Rule { cfa_kind: cfa_kind::RSP, cfa_offset: offset, rbp_kind: rbp_kind::UNCHANGED, rbp_offset: 0 }
    }

    fn span(start: u64, end: u64, rule: Rule) -> Span {
        Span { start, end, rule }
    }

    #[test]
    fn spans_merge_into_rows_with_gaps_marked() {
        let spans = vec![
            span(0x2010, 0x2020, rsp(8)),
            span(0x1000, 0x1004, rsp(8)),
            span(0x1004, 0x1010, rsp(16)),
            span(0x1010, 0x1020, rsp(8)),
            span(0x1020, 0x1030, rsp(8)),  // the same rule as before it: one row
            span(0x1018, 0x1024, rsp(32)), // overlaps: the earlier FDE keeps 0x1018..0x1020
        ];
        let table = Table::from_spans(spans).unwrap();
        assert_eq!(table.base, 0x1000);
        let summary: Vec<(u32, u8, i32)> =
            table.rows.iter().map(|row| (row.pc, row.cfa_kind, row.cfa_offset)).collect();
        assert_eq!(
            summary,
            vec![
                (0x0, cfa_kind::RSP, 8),
                (0x4, cfa_kind::RSP, 16),
                (0x10, cfa_kind::RSP, 8),
                (0x20, cfa_kind::RSP, 32),
                (0x24, cfa_kind::RSP, 8),
                (0x30, cfa_kind::NO_INFO, 0),
                (0x1010, cfa_kind::RSP, 8),
                (0x1020, cfa_kind::NO_INFO, 0),
            ]
        );
        // A page every 256 bytes up to the last row's, and the last row after them.
        let mut pages = vec![0];
        pages.extend([5; 16]);
        pages.push(7);
        assert_eq!(table.pages, pages);
        assert_eq!(table.row_at(0xfff).map(|row| row.cfa_kind), Some(cfa_kind::NO_INFO));
        assert_eq!(table.row_at(0x1005).map(|row| row.cfa_offset), Some(16));
        assert_eq!(table.row_at(0x1800).map(|row| row.cfa_kind), Some(cfa_kind::NO_INFO));
        assert_eq!(table.row_at(0x2010).map(|row| row.cfa_offset), Some(8));
        assert_eq!(table.row_at(0x2020).map(|row| row.cfa_kind), Some(cfa_kind::NO_INFO));
        assert_eq!(table.row_at(u64::MAX).map(|row| row.cfa_kind), Some(cfa_kind::NO_INFO));
    }

    #[test]
    fn empty_and_too_wide_tables_are_refused() {
        assert_eq!(Table::from_spans(vec![]), Err(TableError::Empty));
        assert_eq!(Table::from_spans(vec![span(5, 5, rsp(8))]), Err(TableError::Empty));
        let wide = vec![span(0, 8, rsp(8)), span(1 << 33, (1 << 33) + 8, rsp(8))];
        assert_eq!(Table::from_spans(wide), Err(TableError::TooWide));
    }

    #[test]
    fn every_address_finds_the_row_a_linear_scan_finds() {
        // Rows every few bytes over several pages, with gaps.
        let mut spans = Vec::new();
        let mut address = 0x40_0000u64;
        for index in 0..3000u64 {
            let length = 1 + index % 7;
            if index % 13 != 0 {
                spans.push(span(address, address + length, rsp(8 * (1 + (index % 5) as i32))));
            }
            address += length;
        }
        let table = Table::from_spans(spans).unwrap();
        for probe in (table.base..address + 64).step_by(3) {
            // (Below the base there is no information, as the kernel sees it.)
            let offset = (probe - table.base) as u32;
            let expected = table.rows.iter().rposition(|row| row.pc <= offset).map(|index| table.rows[index]);
            assert_eq!(table.row_at(probe), expected, "{probe:#x}");
        }
    }
}
