//! Which processes a request is about: `?pid=1,2` and `?exe=GLOB` (matched against the
//! executable's path and its file name), both when given; every traced process without them.
use std::collections::BTreeSet;

use serde::Deserialize;

use super::Snapshot;
use crate::report::Report;

/// The query parameters the endpoints take.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    pub pid: Option<String>,
    pub exe: Option<String>,
    pub seconds: Option<String>,
}

/// The processes selected by a request.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pids: Option<BTreeSet<u32>>,
    exe: Option<String>,
}

impl Selection {
    pub fn parse(query: &Query) -> Result<Self, String> {
        let pids = match query.pid.as_deref() {
            None | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|pid| {
                        pid.trim().parse::<u32>().map_err(|_| format!("pid must be a list of process ids, not {pid:?}"))
                    })
                    .collect::<Result<BTreeSet<u32>, String>>()?,
            ),
        };
        let exe = query.exe.clone().filter(|exe| !exe.is_empty());
        Ok(Self { pids, exe })
    }

    /// Whether the process `pid`, running the executable `exe`, is selected.
    pub fn selects(&self, pid: u32, exe: &str) -> bool {
        let pid_matches = self.pids.as_ref().is_none_or(|pids| pids.contains(&pid));
        let exe_matches = self.exe.as_deref().is_none_or(|glob| {
            let name = std::path::Path::new(exe).file_name().map_or(exe.as_bytes(), |name| name.as_encoded_bytes());
            crate::glob::matches(glob.as_bytes(), exe.as_bytes()) || crate::glob::matches(glob.as_bytes(), name)
        });
        pid_matches && exe_matches
    }

    /// The snapshot's report with only the selected processes and their stacks (the summary
    /// stays that of every process).
    pub fn apply(&self, snapshot: &Snapshot) -> Report {
        let report = &snapshot.report;
        let mut selected = report.clone();
        let chosen: BTreeSet<u32> = report
            .processes
            .iter()
            .filter(|process| self.selects(process.pid, snapshot.executable(process.pid)))
            .map(|process| process.pid)
            .collect();
        selected.processes.retain(|process| chosen.contains(&process.pid));
        selected.stacks.retain(|stack| chosen.contains(&stack.pid));
        selected.released_stacks.retain(|stack| chosen.contains(&stack.pid));
        selected.memory.retain(|picture| chosen.contains(&picture.pid));
        if let Some(faults) = &mut selected.faults {
            faults.stacks.retain(|stack| chosen.contains(&stack.pid));
            faults.processes.retain(|process| chosen.contains(&process.pid));
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pid: Option<&str>, exe: Option<&str>) -> Result<Selection, String> {
        Selection::parse(&Query { pid: pid.map(str::to_owned), exe: exe.map(str::to_owned), seconds: None })
    }

    #[test]
    fn pids_and_executables() {
        let all = parse(None, None).unwrap();
        assert!(all.selects(7, "/usr/sbin/nginx"));
        let two = parse(Some("7, 9"), None).unwrap();
        assert!(two.selects(9, "") && !two.selects(8, ""));
        let nginx = parse(None, Some("nginx")).unwrap();
        assert!(nginx.selects(1, "/usr/sbin/nginx"));
        assert!(!nginx.selects(1, "/usr/bin/python3"));
        assert!(parse(None, Some("/usr/*/py*")).unwrap().selects(1, "/usr/bin/python3"));
        assert!(parse(Some("7,x"), None).is_err());
    }
}
