//! uprobe_multi links (Linux 6.6 and later), made with `bpf(BPF_LINK_CREATE)` since aya 0.14
//! has no API for them: one link puts one program at many offsets of one file, for one process
//! (or all).
//!
//! Why: a perf-event uprobe per probe point costs, on removal, a grace period each (about a
//! tenth of a second here), and the kernel takes them one after another under one lock
//! (`event_mutex`); a uprobe_multi link unregisters all its offsets and then waits once, and
//! links closed side by side wait side by side. The program must have been loaded for such
//! links (`UProbe::load_multi`, the patch in `vendor/aya`).
use std::{
    ffi::CString,
    io,
    num::NonZeroU32,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `enum bpf_cmd`.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type`.
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `link_create.uprobe_multi.flags`: the link probes the functions' returns.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
const BPF_PROG_TYPE_KPROBE: u32 = 2;

/// `bpf_attr` for `BPF_LINK_CREATE` up to the end of `link_create.uprobe_multi` (the kernel
/// takes a shorter attribute as zero beyond its end).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    uprobe_flags: u32,
    pid: u32,
    _padding: u32,
}

/// `bpf_attr` for `BPF_PROG_LOAD` up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(size_of::<LinkCreate>() == 64);
const _: () = assert!(size_of::<ProgLoad>() == 72);

/// Where one link goes: a file and the offsets in it, for whom.
pub struct Target<'a> {
    pub path: &'a Path,
    pub offsets: &'a [u64],
    /// One process, or every process mapping the file.
    pub pid: Option<NonZeroU32>,
    /// Probes the functions' returns rather than their entries.
    pub returns: bool,
}

/// Attaches the program `program` (loaded for uprobe_multi) at every offset of `target`; the
/// probes stay until the returned descriptor is closed.
pub fn attach(program: BorrowedFd<'_>, target: &Target<'_>) -> io::Result<OwnedFd> {
    if target.offsets.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a link needs at least one offset"));
    }
    let count = u32::try_from(target.offsets.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let path = CString::new(target.path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    let attr = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: target.offsets.as_ptr() as u64,
        cnt: count,
        uprobe_flags: if target.returns { BPF_F_UPROBE_MULTI_RETURN } else { 0 },
        pid: target.pid.map_or(0, NonZeroU32::get),
        ..LinkCreate::default()
    };
    // SAFETY: the attribute and everything it points to (path, offsets) outlive the
    // call; the kernel copies what it keeps.
    unsafe { bpf(BPF_LINK_CREATE, (&raw const attr).cast(), size_of::<LinkCreate>()) }
}

/// Whether the kernel has uprobe_multi links, as libbpf asks: a program loaded for them, and a
/// link to a directory, which such a kernel refuses with `EBADF` after checking everything
/// else (older kernels refuse the load or the attach type with `EINVAL`).
pub fn supported() -> bool {
    // r0 = 0; exit
    let instructions: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"memtrace_probe");
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..ProgLoad::default()
    };
    // SAFETY: the attribute and the instructions and license it points to outlive the call.
    let program = match unsafe { bpf(BPF_PROG_LOAD, (&raw const load).cast(), size_of::<ProgLoad>()) } {
        Ok(program) => program,
        Err(error) => {
            log::debug!("loading a program for uprobe_multi links: {error}");
            return false;
        }
    };
    use std::os::fd::AsFd;
    let offsets = [0u64];
    let target = Target { path: Path::new("/"), offsets: &offsets, pid: None, returns: false };
    match attach(program.as_fd(), &target) {
        Err(error) if error.raw_os_error() == Some(libc::EBADF) => true,
        Err(error) => {
            log::debug!("a uprobe_multi link to / failed with {error} (EBADF on kernels that have them)");
            false
        }
        // A kernel that took a directory: a link nonetheless, closed at once.
        Ok(_link) => true,
    }
}

/// The `bpf` system call, for a command that returns a new descriptor.
///
/// # Safety
/// `attr` must point to `size` readable bytes laid out as the command's `bpf_attr`, with any
/// pointers in it valid for the call.
unsafe fn bpf(command: libc::c_long, attr: *const libc::c_void, size: usize) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        tries += 1;
        // SAFETY: as the caller promised.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr, size) };
        if fd >= 0 {
            let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
            // SAFETY: the kernel just returned this descriptor to us (close-on-exec, as every
            // BPF descriptor is).
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = io::Error::last_os_error();
        // Interrupted by a signal, the kernel asks for the call again (a few times at most).
        let again = matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EINTR));
        if !again || tries >= 5 {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_needs_an_offset() {
        // No descriptor is touched: the arguments are refused first.
        // SAFETY: standard input stays open for the test; the borrow is never used.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let target = Target { path: Path::new("/bin/true"), offsets: &[], pid: None, returns: false };
        assert_eq!(attach(stdin, &target).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
