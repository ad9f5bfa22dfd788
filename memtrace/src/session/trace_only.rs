//! `run --trace-only GLOB`: which of the processes a command starts are traced, by the path of
//! the executable each runs. The others are still followed (their children may match) but get
//! no probes and are not reported.
use std::path::Path;

use crate::glob::matches;

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
    }
}
