//! The vdso, the kernel's small shared object mapped into every process. It has no file on
//! disk; every process of one kernel and ABI maps the same image, so memtrace copies its own
//! into an anonymous file and names the target's vdso frames from it.
use std::{
    ffi::CStr,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::fd::{FromRawFd, OwnedFd},
};

use crate::target::maps;

/// The path `/proc/PID/maps` shows for the vdso.
pub const VDSO: &str = "[vdso]";

/// memtrace's own vdso image, in an anonymous file.
pub fn own_image() -> io::Result<File> {
    let maps = maps::read(std::process::id())?;
    let vdso = maps
        .iter()
        .find(|mapping| mapping.path.as_deref() == Some(VDSO))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "this process has no vdso"))?;
    let mut image = vec![0u8; (vdso.end - vdso.start) as usize];
    let mut memory = File::open("/proc/self/mem")?;
    memory.seek(SeekFrom::Start(vdso.start))?;
    memory.read_exact(&mut image)?;
    let name: &CStr = c"memtrace-vdso";
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&image)?;
    Ok(file)
}
