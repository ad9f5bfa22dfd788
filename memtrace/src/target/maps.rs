//! `/proc/PID/maps`, parsed.
use std::{fs, io, path::PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    pub inode: u64,
    /// The path as the kernel shows it, without a trailing ` (deleted)`; `[heap]`, `[stack]`,
    /// `[vdso]` for special mappings; `None` for anonymous memory.
    pub path: Option<String>,
    /// The file was deleted or replaced on disk after it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// A mapping of a regular file (not `[heap]`, `[vdso]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|path| path.starts_with('/'))
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// `/proc/PID/map_files/START-END`: the mapped file itself, even when deleted on disk or
    /// when the process runs in another mount namespace.
    pub fn map_file(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end))
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: u32) -> io::Result<Vec<Mapping>> {
    Ok(parse(&fs::read_to_string(format!("/proc/{pid}/maps"))?))
}

/// Parses the text of a maps file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode [path], where path may contain spaces.
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().map(str::trim_start).filter(|path| !path.is_empty());
    let (path, deleted) = match path {
        Some(path) => match path.strip_suffix(" (deleted)") {
            Some(path) => (Some(path.to_owned()), true),
            None => (Some(path.to_owned()), false),
        },
        None => (None, false),
    };
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        writable: perms.get(1) == Some(&b'w'),
        executable: perms.get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anonymous_special_and_deleted_mappings() {
        let text = "\
55d0c1a00000-55d0c1a01000 r-xp 00001000 fe:01 1234   /usr/bin/my prog\n\
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
7ffd1e5f4000-7ffd1e5f6000 r-xp 00000000 00:00 0                          [vdso]\n\
7f1000000000-7f1000001000 r-xp 00002000 fe:01 99 /tmp/gone (deleted)\n\
garbage\n";
        let maps = parse(text);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].start, 0x55d0c1a00000);
        assert_eq!(maps[0].offset, 0x1000);
        assert!(maps[0].executable && maps[0].is_file());
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/my prog"));
        assert_eq!(maps[1].path, None);
        assert!(maps[1].writable && !maps[0].writable);
        assert!(!maps[1].executable && !maps[1].is_file());
        assert_eq!(maps[2].path.as_deref(), Some("[vdso]"));
        assert!(!maps[2].is_file());
        assert!(maps[3].deleted);
        assert_eq!(maps[3].path.as_deref(), Some("/tmp/gone"));
        assert_eq!(maps[3].map_file(7).to_str(), Some("/proc/7/map_files/7f1000000000-7f1000001000"));
    }
}
