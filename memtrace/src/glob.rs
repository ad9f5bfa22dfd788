//! Shell-style globs over bytes (`run --trace-only`, `serve --exe`, `?exe=`): a leaf every room
//! may use.

/// Shell-style matching of all of `text`: `*` any run of bytes (`/` included), `?` one byte,
/// anything else itself. Iterative, with one backtrack point: linear in practice, never
/// exponential.
pub fn matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches(b"*/tests/*", b"/src/tests/unit/run"));
        assert!(!matches(b"*/tests/*", b"/src/test/run"));
        assert!(matches(b"a*b*c", b"aXbYbZc"));
        assert!(!matches(b"a*b*c", b"aXbYbZ"));
        assert!(matches(b"***", b""));
        assert!(matches(b"serve?", b"serve1"));
        assert!(!matches(b"serve?", b"serve"));
    }
}
