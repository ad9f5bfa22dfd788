//! Suppressions in LeakSanitizer's format: one `leak:PATTERN` per line, `#` comments and blank
//! lines ignored. A stack is suppressed when PATTERN matches the function, the source file or
//! the module of any of its frames. As in LeakSanitizer, a pattern matches anywhere in the
//! name (`leak:libfoo.so` matches `/usr/lib/libfoo.so.1`); `*` matches any run of characters;
//! a leading `^` or trailing `$` anchors it to the start or end of the name.
use std::{fmt::Write as _, path::Path};

use thiserror::Error;

use crate::report::{ReportFrame, Stack};

/// One-time allocations of glibc and libstdc++ that are never freed by design (valgrind frees
/// them at exit through `__libc_freeres` and `__gnu_cxx::__freeres`, which only it calls).
/// Switched off with `--no-builtin-suppressions`.
pub const BUILTIN: &str = "\
# stdio: the buffer of each FILE (stdout, stderr, fopen'ed files), allocated at its first use
leak:_IO_file_doallocate
# the dynamic loader: thread-local storage and the records of loaded libraries
leak:_dl_allocate_tls
leak:_dl_resize_dtv
leak:_dl_update_slotinfo
leak:_dl_new_object
leak:_dl_map_object
leak:_dl_check_map_versions
# glibc's locale data and message catalogs, loaded once
leak:_nl_load_locale
leak:_nl_intern_locale_data
leak:_nl_find_domain
# libstdc++'s emergency pool for exceptions thrown when memory runs out: its constructor, or
# (GCC 12) the file's static initializer it is inlined into, whose inlined frame is named `pool`
leak:(anonymous namespace)::pool::pool
leak:_GLOBAL__sub_I_eh_alloc.cc
";

/// The largest suppressions file read.
const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SuppressionError {
    #[error("cannot read the suppressions file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "{path}:{line}: `{text}` is not a suppression: write `leak:PATTERN` (LeakSanitizer's format), or `#` for a comment"
    )]
    Syntax { path: String, line: usize, text: String },
}

/// One `leak:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// As written, without `leak:`.
    pub pattern: String,
    /// Where it came from: `FILE:LINE` or `built-in`.
    pub origin: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suppressions {
    pub list: Vec<Suppression>,
}

impl Suppressions {
    /// Parses the text of a suppressions file; `name` is used in messages.
    pub fn parse(text: &str, name: &str) -> Result<Self, SuppressionError> {
        let mut list = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let pattern = line.strip_prefix("leak:").map(str::trim).filter(|pattern| !pattern.is_empty());
            let Some(pattern) = pattern else {
                return Err(SuppressionError::Syntax { path: name.to_owned(), line: index + 1, text: line.to_owned() });
            };
            list.push(Suppression { pattern: pattern.to_owned(), origin: format!("{name}:{}", index + 1) });
        }
        Ok(Self { list })
    }

    pub fn builtin() -> Self {
        let mut builtin = Self::parse(BUILTIN, "built-in").unwrap_or_default();
        for suppression in &mut builtin.list {
            suppression.origin = "built-in".to_owned();
        }
        builtin
    }

    pub fn read(path: &Path) -> Result<Self, SuppressionError> {
        let name = path.display().to_string();
        // Without blocking on a FIFO or reading a device without end.
        let bytes = crate::untrusted::read(path, crate::untrusted::Links::Follow, MAX_FILE_BYTES)
            .map_err(|error| SuppressionError::Read { path: name.clone(), reason: error.to_string() })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| SuppressionError::Read { path: name.clone(), reason: "it is not UTF-8 text".to_owned() })?;
        Self::parse(&text, &name)
    }

    pub fn extend(&mut self, other: Suppressions) {
        self.list.extend(other.list);
    }

    /// The first suppression matching any frame of `stack`.
    pub fn matching(&self, stack: &Stack) -> Option<&Suppression> {
        self.list.iter().find(|suppression| stack.frames.iter().any(|frame| frame_matches(&suppression.pattern, frame)))
    }
}

fn frame_matches(pattern: &str, frame: &ReportFrame) -> bool {
    [&frame.function, &frame.file, &frame.module].into_iter().flatten().any(|name| template_match(pattern, name))
}

/// LeakSanitizer's `TemplateMatch`: `*` wildcards, optional `^`/`$` anchors, otherwise a match
/// anywhere in `text`. An empty name never matches.
pub fn template_match(pattern: &str, text: &str) -> bool {
    if text.is_empty() {
        return false;
    }
    let (anchored_start, pattern) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (anchored_end, pattern) = match pattern.strip_suffix('$') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let pieces: Vec<&str> = pattern.split('*').collect();
    let last = pieces.len() - 1;
    let mut at = 0;
    for (index, piece) in pieces.iter().enumerate() {
        if piece.is_empty() {
            continue;
        }
        if index == last && anchored_end {
            // The last piece must end the text, after what matched so far.
            return text.len() >= at + piece.len()
                && text.ends_with(piece)
                && (index > 0 || !anchored_start || text.len() == piece.len());
        }
        let Some(found) = text[at..].find(piece) else { return false };
        if index == 0 && anchored_start && found != 0 {
            return false;
        }
        at += found + piece.len();
    }
    // An anchored end whose last piece is empty (`foo*$` or `$` alone) matches any rest; one
    // after a non-empty last piece was handled above.
    !anchored_end || pieces[last].is_empty() || at == text.len()
}

/// A suppressions file that silences `stacks`: one line per stack, naming its innermost frame
/// with a function (else its module), each once.
pub fn print(stacks: &[&Stack]) -> String {
    let mut out = String::from("# memtrace suppressions for the leaks of this report (LeakSanitizer's format)\n");
    let mut seen = std::collections::HashSet::new();
    for stack in stacks {
        let name = stack
            .frames
            .iter()
            .find_map(|frame| frame.function.clone())
            .or_else(|| stack.frames.iter().find_map(|frame| frame.module.clone()));
        if let Some(name) = name
            && seen.insert(name.clone())
        {
            let _ = writeln!(out, "leak:{name}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, file: Option<&str>, module: &str) -> ReportFrame {
        ReportFrame {
            address: "0x1".into(),
            function: function.map(str::to_owned),
            file: file.map(str::to_owned),
            line: None,
            module: Some(module.to_owned()),
            module_offset: None,
            inlined: false,
        }
    }

    fn stack(frames: Vec<ReportFrame>) -> Stack {
        Stack {
            kind: crate::report::Kind::Heap,
            bytes: 1,
            allocations: 1,
            pid: 1,
            frames,
            unavailable: None,
            truncated: false,
            leak_kind: None,
            suppressed_by: None,
            growth: None,
            total_allocated_bytes: 0,
            total_allocations: 0,
        }
    }

    #[test]
    fn templates_match_like_leak_sanitizer() {
        assert!(template_match("foo", "my_foo_bar"));
        assert!(template_match("^foo", "foo_bar"));
        assert!(!template_match("^foo", "my_foo"));
        assert!(template_match("bar$", "foo_bar"));
        assert!(!template_match("bar$", "bar_foo"));
        assert!(template_match("^foo*bar$", "foo_x_bar"));
        assert!(!template_match("^foo*bar$", "foo_x_baz"));
        assert!(template_match("a*b$", "abxb"));
        assert!(template_match("libfoo.so", "/usr/lib/libfoo.so.1"));
        assert!(template_match("*", "anything"));
        assert!(template_match("^exact$", "exact"));
        assert!(!template_match("^exact$", "exactly"));
        assert!(!template_match("x", ""));
    }

    #[test]
    fn a_device_is_refused_without_reading_it() {
        assert_eq!(
            Suppressions::read(Path::new("/dev/zero")).err(),
            Some(SuppressionError::Read {
                path: "/dev/zero".to_owned(),
                reason: "it is a character device, not a regular file".to_owned()
            })
        );
    }

    #[test]
    fn files_parse_with_comments_and_report_bad_lines() {
        let text = "# a comment\n\nleak:make_cache\n  leak:*/vendor/*  \n";
        let parsed = Suppressions::parse(text, "supp.txt").unwrap();
        assert_eq!(parsed.list.len(), 2);
        assert_eq!(parsed.list[1], Suppression { pattern: "*/vendor/*".into(), origin: "supp.txt:4".into() });
        assert_eq!(
            Suppressions::parse("leak:a\nrace:b\n", "s").unwrap_err(),
            SuppressionError::Syntax { path: "s".into(), line: 2, text: "race:b".into() }
        );
        assert!(Suppressions::parse("leak:\n", "s").is_err());
        assert!(!Suppressions::builtin().list.is_empty());
    }

    #[test]
    fn any_frame_matches_by_function_file_or_module() {
        let leak = stack(vec![
            frame(Some("make_cache"), Some("/src/cache.c"), "/usr/bin/app"),
            frame(Some("main"), Some("/src/main.c"), "/usr/bin/app"),
        ]);
        let by =
            |pattern: &str| Suppressions::parse(&format!("leak:{pattern}"), "s").unwrap().matching(&leak).is_some();
        assert!(by("make_cache"));
        assert!(by("^main$"));
        assert!(by("cache.c"));
        assert!(by("*/usr/bin/*"));
        assert!(!by("other_function"));
        assert!(!by("^cache"));
    }

    #[test]
    fn printed_suppressions_silence_the_stacks_they_came_from() {
        let stacks = [
            stack(vec![frame(Some("make_cache"), None, "/app"), frame(Some("main"), None, "/app")]),
            stack(vec![frame(None, None, "/lib/libx.so")]),
        ];
        let printed = print(&stacks.iter().collect::<Vec<_>>());
        assert_eq!(printed.lines().skip(1).collect::<Vec<_>>(), vec!["leak:make_cache", "leak:/lib/libx.so"]);
        let parsed = Suppressions::parse(&printed, "printed").unwrap();
        assert!(stacks.iter().all(|stack| parsed.matching(stack).is_some()));
    }
}
