//! An error and its causes on one line, each said once.
//!
//! An error's message often includes its cause already (`cannot start X: Permission denied`)
//! while also naming it as its source; printing the chain (`{:#}`) then says the cause twice.
//! Errors here are written so that one does not both interpolate and return its cause, and
//! printing through this module makes a slip harmless: a cause whose text the line already
//! holds is not added again. Causes that are not in the message (an OS error under a library's
//! "`bpf_link_create` failed") are kept.
use std::error::Error;

/// `error` and its causes, outermost first, joined by ": ", each said once.
pub fn one_line(error: &anyhow::Error) -> String {
    join(error.chain())
}

/// The same for any error (a library's, whose Display leaves its cause out).
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    join(std::iter::successors(Some(error), |&error| error.source()))
}

fn join<'a>(chain: impl Iterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut line = String::new();
    for error in chain {
        let text = error.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io;

    use thiserror::Error;

    use super::*;

    /// The slip: a cause both in the message and the source.
    #[derive(Debug, Error)]
    #[error("cannot start {program}: {source}")]
    struct Both {
        program: String,
        source: io::Error,
    }

    /// A library's way: the cause only as the source.
    #[derive(Debug, Error)]
    #[error("`bpf_link_create` failed")]
    struct Syscall {
        #[source]
        io_error: io::Error,
    }

    #[test]
    fn each_cause_is_said_once_and_none_is_lost() {
        let both = Both { program: "./x".into(), source: io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!(
            format!("{:#}", anyhow::Error::from(both)),
            "cannot start ./x: Permission denied (os error 13): Permission denied (os error 13)"
        );
        let both = Both { program: "./x".into(), source: io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!(one_line(&anyhow::Error::from(both)), "cannot start ./x: Permission denied (os error 13)");
        let syscall = Syscall { io_error: io::Error::from_raw_os_error(libc::EMFILE) };
        assert_eq!(with_causes(&syscall), "`bpf_link_create` failed: Too many open files (os error 24)");
        let context =
            anyhow::Error::from(Syscall { io_error: io::Error::from_raw_os_error(libc::EMFILE) }).context("attaching");
        assert_eq!(one_line(&context), "attaching: `bpf_link_create` failed: Too many open files (os error 24)");
    }
}
