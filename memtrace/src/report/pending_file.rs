//! A file memtrace writes (`-o FILE`, `--print-suppressions FILE`), replaced only once it is
//! complete: checked and prepared before tracing starts, without touching what is there.
//!
//! memtrace writes into a new temporary file beside the target (created with `O_EXCL` and
//! `O_NOFOLLOW`, mode 0644 or the old file's if stricter, never world-writable) and renames it
//! over the target when the report is written. A run that fails (a missing command, a bad
//! option, SIGKILL) leaves the previous file as it was; a SIGKILL can leave the temporary file
//! behind (`.NAME.XXXXXXXXXXXXXXXX.memtrace-tmp`).
//!
//! The target is refused when it is a symbolic link (memtrace runs as root, and another user
//! could plant a link in a shared directory to make it overwrite any file: give the path the
//! link points to), or anything but a regular file, except a character device such as
//! `/dev/null`, which is written in place.
use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{self, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{FileTypeExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
};

/// A file being written: the temporary file (or the device) until [`PendingFile::commit`].
pub struct PendingFile {
    target: PathBuf,
    /// The temporary file, removed unless committed; `None` for a device written in place.
    temp: Option<PathBuf>,
    file: File,
}

impl PendingFile {
    /// Checks that `target` can be replaced and creates the temporary file beside it. Nothing
    /// at `target` changes.
    pub fn create(target: &Path) -> io::Result<Self> {
        let mode = match std::fs::symlink_metadata(target) {
            Ok(metadata) => {
                let kind = metadata.file_type();
                if kind.is_symlink() {
                    return Err(io::Error::other(
                        "it is a symbolic link, which memtrace does not write through: remove it or give the path it points to",
                    ));
                }
                if kind.is_char_device() {
                    let file = open(target, libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NOCTTY, 0)?;
                    return Ok(Self { target: target.to_path_buf(), temp: None, file });
                }
                if !kind.is_file() {
                    return Err(io::Error::other(format!("it is {}, not a regular file", kind_name(&kind))));
                }
                // No looser than the file it replaces.
                0o644 & metadata.mode()
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0o644,
            Err(error) => return Err(error),
        };
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "it names no file"))?
            .as_bytes();
        let directory = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        // A name nobody can guess, made anew if it is taken (by a file or a planted link).
        let mut last_error = None;
        for _ in 0..16 {
            let mut temp_name = b".".to_vec();
            temp_name.extend_from_slice(&name[..name.len().min(200)]);
            temp_name.extend_from_slice(format!(".{:016x}.memtrace-tmp", random()).as_bytes());
            let temp = directory.join(OsString::from_vec(temp_name));
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY;
            match open(&temp, flags, mode) {
                Ok(file) => return Ok(Self { target: target.to_path_buf(), temp: Some(temp), file }),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no temporary file could be made")))
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Puts the written file in the target's place.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        let Some(temp) = self.temp.take() else { return Ok(()) };
        let renamed = self.file.sync_all().and_then(|()| std::fs::rename(&temp, &self.target));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        renamed
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn open(path: &Path, flags: i32, mode: u32) -> io::Result<File> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
    let fd = unsafe { libc::open(name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// 64 random bits, from the standard library's randomly keyed hasher.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".memtrace-tmp"))
            .collect()
    }

    #[test]
    fn the_target_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.txt");
        std::fs::write(&target, "previous").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut pending = PendingFile::create(&target).unwrap();
        pending.file().write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "previous");
        assert_eq!(leftovers(dir.path()).len(), 1);
        drop(pending);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "previous");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        let mut pending = PendingFile::create(&target).unwrap();
        pending.file().write_all(b"new").unwrap();
        pending.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        // The old file's stricter mode is kept.
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn links_and_special_files_are_refused_devices_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link");
        symlink(&victim, &link).unwrap();
        let error = PendingFile::create(&link).err().unwrap();
        assert_eq!(
            error.to_string(),
            "it is a symbolic link, which memtrace does not write through: remove it or give the path it points to"
        );
        assert_eq!(PendingFile::create(dir.path()).err().unwrap().to_string(), "it is a directory, not a regular file");
        let mut null = PendingFile::create(Path::new("/dev/null")).unwrap();
        null.file().write_all(b"gone").unwrap();
        null.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }
}
