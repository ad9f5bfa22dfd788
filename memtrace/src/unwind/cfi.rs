//! Reading a module's call-frame information (`.eh_frame`, `.debug_frame`) with gimli into
//! spans: address ranges, each with the one rule the kernel's walk applies there (x86-64).
//!
//! Only what the walk needs survives: how to find the CFA (RSP or RBP plus an offset, or the
//! linker's PLT expression), whether the return address is where x86-64 always puts it
//! (CFA - 8), and where the caller's RBP is. Anything else becomes a rule that stops the walk,
//! marked truncated, rather than a guess.
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Reader, RegisterRule,
    UnwindContext, UnwindSection, UnwindTableRow, X86_64,
};
use memtrace_common::unwind::{cfa_kind, rbp_kind};

type Slice<'data> = EndianSlice<'data, LittleEndian>;

/// The rule of one address range, as the kernel's row holds it (see `UnwindRow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub cfa_kind: u8,
    pub cfa_offset: i32,
    pub rbp_kind: u8,
    pub rbp_offset: i16,
}

impl Rule {
    pub const NO_INFO: Rule = Rule::stop(cfa_kind::NO_INFO);
    pub const UNSUPPORTED: Rule = Rule::stop(cfa_kind::UNSUPPORTED);
    pub const END: Rule = Rule::stop(cfa_kind::END);

    const fn stop(kind: u8) -> Rule {
        Rule { cfa_kind: kind, cfa_offset: 0, rbp_kind: rbp_kind::UNCHANGED, rbp_offset: 0 }
    }
}

/// `[start, end)` of ELF virtual addresses with one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub rule: Rule,
}

/// What reading one section found, for `-v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionCounts {
    pub fdes: usize,
    /// FDEs gimli could not parse or evaluate: their addresses get no rows.
    pub bad_fdes: usize,
    /// Spans with a rule the walk does not implement.
    pub unsupported: usize,
}

/// Most spans read from one module: a bound on the agent's memory for a crafted file (a large
/// real library has a few hundred thousand).
pub const MAX_SPANS: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CfiError {
    #[error("more than {MAX_SPANS} unwind rows")]
    TooManyRows,
    #[error("{0}")]
    Parse(#[from] gimli::Error),
}

/// Addresses a module's `.eh_frame` pointer encodings are relative to.
#[derive(Clone, Copy, Debug, Default)]
pub struct EhFrameBases {
    pub eh_frame: u64,
    pub text: u64,
    pub got: u64,
}

/// Appends the spans of an `.eh_frame` section to `spans`.
pub fn read_eh_frame(data: &[u8], bases: EhFrameBases, spans: &mut Vec<Span>) -> Result<SectionCounts, CfiError> {
    let mut section = EhFrame::new(data, LittleEndian);
    section.set_address_size(8);
    let bases = BaseAddresses::default().set_eh_frame(bases.eh_frame).set_text(bases.text).set_got(bases.got);
    read_section(&section, &bases, spans)
}

/// Appends the spans of a `.debug_frame` section to `spans`.
pub fn read_debug_frame(data: &[u8], spans: &mut Vec<Span>) -> Result<SectionCounts, CfiError> {
    let mut section = DebugFrame::new(data, LittleEndian);
    section.set_address_size(8);
    read_section(&section, &BaseAddresses::default(), spans)
}

fn read_section<'data, S: UnwindSection<Slice<'data>>>(
    section: &S,
    bases: &BaseAddresses,
    spans: &mut Vec<Span>,
) -> Result<SectionCounts, CfiError> {
    let mut counts = SectionCounts::default();
    let mut context = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    // An entry that cannot be parsed leaves no way to find the next one: the spans so far stay.
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else { continue };
        counts.fdes += 1;
        let fde = match partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset)) {
            Ok(fde) => fde,
            Err(_) => {
                counts.bad_fdes += 1;
                continue;
            }
        };
        let before = spans.len();
        let mut rows = match fde.rows(section, bases, &mut context) {
            Ok(rows) => rows,
            Err(_) => {
                counts.bad_fdes += 1;
                continue;
            }
        };
        loop {
            match rows.next_row() {
                Ok(Some(row)) => {
                    if spans.len() >= MAX_SPANS {
                        return Err(CfiError::TooManyRows);
                    }
                    let rule = rule_of(row, section);
                    counts.unsupported += usize::from(rule == Rule::UNSUPPORTED);
                    spans.push(Span { start: row.start_address(), end: row.end_address(), rule });
                }
                Ok(None) => break,
                Err(_) => {
                    // Half an FDE is worse than none: its rows may be wrong past the error.
                    spans.truncate(before);
                    counts.bad_fdes += 1;
                    break;
                }
            }
        }
    }
    Ok(counts)
}

/// The kernel's rule for one row of the CFI table.
fn rule_of<'data, S: UnwindSection<Slice<'data>>>(row: &UnwindTableRow<usize>, section: &S) -> Rule {
    // gimli drops a rule set to undefined, so "undefined" and "never mentioned" look the same:
    // both mean the return address cannot be found, which every x86-64 CIE rules out except
    // for the outermost frames (`DW_CFA_undefined rip`).
    let return_address = row.registers().find(|(register, _)| *register == X86_64::RA).map(|(_, rule)| rule);
    match return_address {
        None | Some(RegisterRule::Undefined) => return Rule::END,
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Rule::UNSUPPORTED,
    }
    let (cfa_kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = match *register {
                X86_64::RSP => cfa_kind::RSP,
                X86_64::RBP => cfa_kind::RBP,
                _ => return Rule::UNSUPPORTED,
            };
            let Ok(offset) = i32::try_from(*offset) else { return Rule::UNSUPPORTED };
            (kind, offset)
        }
        CfaRule::Expression(expression) => {
            let bytes =
                expression.get(section).map(|expression| expression.0.to_slice().ok().map(|bytes| bytes.to_vec()));
            match bytes.ok().flatten().as_deref().and_then(plt_threshold) {
                Some(threshold) => (cfa_kind::PLT, threshold),
                None => return Rule::UNSUPPORTED,
            }
        }
    };
    let (rbp_kind, rbp_offset) = match row.register(X86_64::RBP) {
        RegisterRule::Undefined | RegisterRule::SameValue => (rbp_kind::UNCHANGED, 0),
        RegisterRule::Offset(offset) => match i16::try_from(offset) {
            Ok(offset) => (rbp_kind::AT_CFA_OFFSET, offset),
            Err(_) => (rbp_kind::LOST, 0),
        },
        _ => (rbp_kind::LOST, 0),
    };
    Rule { cfa_kind, cfa_offset, rbp_kind, rbp_offset }
}

/// The linker's CFA expression for a `.plt` of 16-byte stubs, `DW_OP_breg7 8; DW_OP_breg16 0;
/// DW_OP_lit15; DW_OP_and; DW_OP_lit11 (or lit10); DW_OP_ge; DW_OP_lit3; DW_OP_shl;
/// DW_OP_plus`: RSP + 8, plus 8 from the stub's byte 11 (10) on, where its `push` has run.
/// Returns that byte.
fn plt_threshold(expression: &[u8]) -> Option<i32> {
    const DW_OP_LIT10: u8 = 0x3a;
    const DW_OP_LIT11: u8 = 0x3b;
    let [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, literal, 0x2a, 0x33, 0x24, 0x22] = *expression else { return None };
    match literal {
        DW_OP_LIT11 => Some(11),
        DW_OP_LIT10 => Some(10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plt_expressions_are_recognised_and_others_are_not() {
        let plt = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(plt_threshold(&plt), Some(11));
        let mut plt10 = plt;
        plt10[6] = 0x3a;
        assert_eq!(plt_threshold(&plt10), Some(10));
        let mut other = plt;
        other[1] = 0x10;
        assert_eq!(plt_threshold(&other), None);
        assert_eq!(plt_threshold(&plt[..10]), None);
    }

    #[test]
    fn garbage_sections_read_nothing_and_do_not_panic() {
        let mut spans = Vec::new();
        for data in [&[][..], &[0xff; 64][..], &[0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0x7a, 0, 1, 0x78, 0x10][..]] {
            let _ = read_eh_frame(data, EhFrameBases::default(), &mut spans);
            let _ = read_debug_frame(data, &mut spans);
        }
        assert!(spans.is_empty());
    }
}
