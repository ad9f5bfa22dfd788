//! `run --trace-only GLOB`: which of the processes a command starts are traced, by the path of
//! the executable each runs. The others are still followed (their children may match) but get
//! no probes and are not reported.
use std::path::Path;

/// The globs; empty traces every process.
#[derive(Debug, Clone, Default)]
pub struct TraceOnly {
    globs: Vec<String>,
}

impl TraceOnly {
    pub fn new(globs: &[String]) -> Self {
        Self { globs: globs.to_vec() }
    }

    /// Whether a process running the executable at `path` is traced.
    pub fn traces(&self, path: &Path) -> bool {
        self.globs.is_empty()
            || self.globs.iter().any(|glob| matches(glob.as_bytes(), path.as_os_str().as_encoded_bytes()))
    }

    /// Whether the process `pid` is traced, by the executable it runs now (after an exec: the
    /// new one). A process whose executable cannot be read (it is gone) is not.
    pub fn traces_process(&self, pid: u32) -> bool {
        self.globs.is_empty() || std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| self.traces(&exe))
    }
}

/// Shell-style matching of all of `text`: `*` any run of bytes (`/` included), `?` one byte,
/// anything else itself. Iterative, with one backtrack point: linear in practice, never
/// exponential.
fn matches(glob: &[u8], text: &[u8]) -> bool {
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
    fn globs_match_whole_paths() {
        let only = TraceOnly::new(&["*/t_*".to_owned(), "/opt/suite/bin/check?".to_owned()]);
        assert!(only.traces(Path::new("/build/tests/t_alloc")));
        assert!(only.traces(Path::new("/tmp/x/t_")));
        assert!(!only.traces(Path::new("/usr/bin/bash")));
        assert!(!only.traces(Path::new("/build/tests/test_alloc")));
        assert!(only.traces(Path::new("/opt/suite/bin/check1")));
        assert!(!only.traces(Path::new("/opt/suite/bin/check12")));
        assert!(TraceOnly::default().traces(Path::new("/usr/bin/make")));
        assert!(matches(b"*/tests/*", b"/src/tests/unit/run"));
        assert!(!matches(b"*/tests/*", b"/src/test/run"));
        assert!(matches(b"a*b*c", b"aXbYbZc"));
        assert!(!matches(b"a*b*c", b"aXbYbZ"));
        assert!(matches(b"***", b""));
    }
}
