//! Frames as the compact formats name them: functions without parameter lists and template
//! arguments (`shop::OrderBook::add`, not `shop::OrderBook::add(int)`), as pprof's web view
//! shortens them; and the innermost frame in the program's own code, which names a leak in
//! JUnit (the JSON and pprof keep every frame's full name).
use super::{ReportFrame, Stack};

/// `name` without its parameter lists, template arguments and qualifiers after them:
/// `std::vector<int, std::allocator<int> >::push_back(int const&)` is
/// `std::vector::push_back`, `operator new(unsigned long)` is `operator new`,
/// `main::{lambda(int)#1}::operator()(int) const` is `main::{lambda#1}::operator()`. Operators
/// keep their symbol (`operator<<`, `operator()`), and `(anonymous namespace)` stays. A name that
/// would come out empty (a Rust `<T as Trait>::f` seen from outside) is returned whole.
pub fn short_function_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("(anonymous namespace)") {
            out.push_str("(anonymous namespace)");
            rest = after;
            continue;
        }
        if ends_with_word(&out, "operator") {
            let symbol = operator_symbol(rest);
            if !symbol.is_empty() {
                out.push_str(symbol);
                rest = &rest[symbol.len()..];
                continue;
            }
        }
        match c {
            '(' | '<' => rest = skip_group(rest),
            _ => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    // What followed the last parameter list: ` const`, ` &&`, ` volatile`.
    let mut short = out.trim_end().to_owned();
    for qualifier in [" const", " volatile", " &&", " &"] {
        while let Some(stripped) = short.strip_suffix(qualifier) {
            short = stripped.trim_end().to_owned();
        }
    }
    // A function template's return type before its name: `void std::vector::_M_realloc_insert`.
    while let Some((head, tail)) = short.split_once(' ') {
        if head.contains("operator") || head.ends_with("(anonymous") || tail.is_empty() {
            break;
        }
        short = tail.to_owned();
    }
    if short.is_empty() || short.starts_with("::") { name.to_owned() } else { short }
}

/// Whether `text` ends with `word` as a whole identifier.
fn ends_with_word(text: &str, word: &str) -> bool {
    text.strip_suffix(word).is_some_and(|before| !before.ends_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// The symbol of an operator that starts `rest` (right after `operator`): `()`, `[]`, `<<=`,
/// `->*`, ` new[]`, ... ; empty when none does (a conversion operator's type is kept as is).
fn operator_symbol(rest: &str) -> &str {
    for symbol in [
        " new[]",
        " delete[]",
        " new",
        " delete",
        "()",
        "[]",
        "<=>",
        "<<=",
        ">>=",
        "->*",
        "<<",
        ">>",
        "<=",
        ">=",
        "->",
        "==",
        "!=",
        "&&",
        "||",
        "++",
        "--",
        "+=",
        "-=",
        "*=",
        "/=",
        "%=",
        "&=",
        "|=",
        "^=",
        "<",
        ">",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "&",
        "|",
        "~",
        "!",
        "=",
        ",",
    ] {
        if rest.starts_with(symbol) {
            return &rest[..symbol.len()];
        }
    }
    ""
}

/// `text` after the bracketed group it starts with (`(...)` or `<...>`, nested), or after its
/// first character when the group never closes.
fn skip_group(text: &str) -> &str {
    let mut depth = 0usize;
    for (index, c) in text.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[index + 1..];
                }
            }
            _ => {}
        }
    }
    // Unbalanced (a `<` that is not a bracket, as in a name mangled oddly): drop only it.
    &text[1..]
}

/// Where code that is not the program's own lives: system libraries and their headers (a
/// libstdc++ template inlined into the program is still libstdc++'s), Rust's standard library.
const NOT_OWN_PREFIXES: [&str; 7] =
    ["/usr/lib/", "/usr/lib64/", "/lib/", "/lib64/", "/usr/include/", "/usr/libexec/", "/rustc/"];

fn is_system_path(path: &str) -> bool {
    NOT_OWN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// Whether a frame is in the program's own code: a named function, with a source file and line,
/// neither in a system library nor from a system header.
pub fn is_own(frame: &ReportFrame) -> bool {
    frame.function.is_some()
        && frame.line.is_some()
        && frame.file.as_deref().is_some_and(|file| !is_system_path(file))
        && !frame.module.as_deref().is_some_and(is_system_path)
}

/// The frame that names where a stack allocated: the innermost in the program's own code, or
/// failing that the innermost named outside system libraries, or the innermost named at all.
pub fn origin(stack: &Stack) -> Option<&ReportFrame> {
    let frames = &stack.frames;
    frames
        .iter()
        .find(|frame| is_own(frame))
        .or_else(|| {
            frames.iter().find(|frame| frame.function.is_some() && !frame.module.as_deref().is_some_and(is_system_path))
        })
        .or_else(|| frames.iter().find(|frame| frame.function.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_lists_and_template_arguments_go() {
        for (full, short) in [
            ("shop::OrderBook::add(int)", "shop::OrderBook::add"),
            ("std::vector<int, std::allocator<int> >::push_back(int const&)", "std::vector::push_back"),
            (
                "void std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)",
                "std::vector::_M_realloc_insert",
            ),
            ("operator new(unsigned long)", "operator new"),
            ("operator new[](unsigned long)", "operator new[]"),
            ("shop::Price::operator<(shop::Price const&) const", "shop::Price::operator<"),
            ("std::ostream::operator<<(int)", "std::ostream::operator<<"),
            ("main::{lambda(int)#1}::operator()(int) const", "main::{lambda#1}::operator()"),
            ("(anonymous namespace)::pool::pool()", "(anonymous namespace)::pool::pool"),
            ("std::function<void ()>::operator()() const", "std::function::operator()"),
            ("leak_with_malloc", "leak_with_malloc"),
            ("alloc::vec::Vec<T,A>::push", "alloc::vec::Vec::push"),
            (
                "<alloc::string::String as core::clone::Clone>::clone",
                "<alloc::string::String as core::clone::Clone>::clone",
            ),
            ("odd<name", "oddname"),
            ("unsigned long shop::count<int>(int)", "shop::count"),
            ("shop::Price::operator bool() const", "shop::Price::operator bool"),
        ] {
            assert_eq!(short_function_name(full), short, "{full}");
        }
    }

    fn frame(function: &str, file: Option<&str>, module: &str) -> ReportFrame {
        ReportFrame {
            address: "0x1".into(),
            function: Some(function.into()),
            file: file.map(str::to_owned),
            line: file.map(|_| 7),
            module: Some(module.into()),
            module_offset: Some("0x1".into()),
            inlined: false,
        }
    }

    #[test]
    fn the_origin_is_the_innermost_frame_of_the_programs_own_code() {
        let stack = |frames| Stack {
            kind: super::super::Kind::Heap,
            bytes: 1,
            allocations: 1,
            total_allocated_bytes: 1,
            total_allocations: 1,
            pid: 1,
            frames,
            unavailable: None,
            truncated: false,
            leak_kind: None,
            suppressed_by: None,
            growth: None,
        };
        let vector = stack(vec![
            frame("operator new(unsigned long)", None, "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30"),
            frame(
                "std::__new_allocator<int>::allocate(unsigned long, void const*)",
                Some("/usr/include/c++/12/bits/new_allocator.h"),
                "/t/shop",
            ),
            frame("shop::OrderBook::add(int)", Some("/src/shop.cpp"), "/t/shop"),
            frame("main", Some("/src/shop.cpp"), "/t/shop"),
        ]);
        assert_eq!(origin(&vector).and_then(|frame| frame.function.as_deref()), Some("shop::OrderBook::add(int)"));
        // No line information: the innermost named frame outside system libraries.
        let stripped =
            stack(vec![frame("malloc", None, "/usr/lib/x86_64-linux-gnu/libc.so.6"), frame("grab", None, "/t/prog")]);
        assert_eq!(origin(&stripped).and_then(|frame| frame.function.as_deref()), Some("grab"));
        let system = stack(vec![frame("strdup", None, "/usr/lib/x86_64-linux-gnu/libc.so.6")]);
        assert_eq!(origin(&system).and_then(|frame| frame.function.as_deref()), Some("strdup"));
        assert!(origin(&stack(Vec::new())).is_none());
    }
}
