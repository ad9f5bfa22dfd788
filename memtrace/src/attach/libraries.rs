//! The shared libraries a dynamically linked program will load, in the order its symbols are
//! looked up, found as glibc's dynamic loader finds them, without running anything.
//!
//! memtrace runs as root and must never execute what a traced user controls: neither the
//! program's `PT_INTERP` (asking it `--list` would run a binary of the user's choosing as
//! root) nor anything else. So the loader's search is done here, by reading files:
//!
//! - the program's `PT_INTERP` only says whether it is dynamically linked, and which object is
//!   the loader (its path and soname satisfy a `DT_NEEDED` on it: it is listed where first
//!   needed, as `ldd` lists it, or last);
//! - `LD_PRELOAD` (spaces or colons between names) and then `/etc/ld.so.preload` come first;
//! - then, breadth first, each object's `DT_NEEDED`, a name matching an object already loaded
//!   (by the name it was asked for, its path or its `DT_SONAME`, or the same file) being that
//!   object;
//! - a name with a `/` is a path; any other is looked for in the `DT_RPATH` of the object that
//!   needs it and of the objects that needed that one, up to the program (only when the object
//!   has no `DT_RUNPATH`: an object with both has its `DT_RPATH` ignored), then
//!   `LD_LIBRARY_PATH`, then the needing object's `DT_RUNPATH`, then `/etc/ld.so.cache` (when it
//!   cannot be read, the directories `/etc/ld.so.conf` lists), then the default directories;
//!   `DF_1_NODEFLIB` leaves out the cache's default-directory entries and the defaults;
//! - in each directory the `glibc-hwcaps` subdirectories this CPU supports come first
//!   (`x86-64-v4`, `-v3`, `-v2`); the legacy hwcap subdirectories (`tls`, `x86_64`), which glibc
//!   stopped searching in 2.37, are not searched;
//! - `$ORIGIN`, `$LIB` and `$PLATFORM` (or `${...}`) are expanded in paths, search lists and
//!   `LD_LIBRARY_PATH`/`LD_PRELOAD`, and an empty list element is the working directory;
//! - a file of another ELF class or machine than the program is passed over, as is anything
//!   but a regular ELF shared object;
//! - for a set-user-ID or set-group-ID program (`AT_SECURE`), `LD_LIBRARY_PATH` is ignored,
//!   `LD_PRELOAD` takes only bare names found in the default places and set-user-ID, and an
//!   `$ORIGIN` element is kept only when it expands to a default directory.
//!
//! Filter objects (`DT_FILTER`, `DT_AUXILIARY`) are not followed.
//!
//! Every path is resolved inside the target's root directory (`/proc/PID/root` for a process
//! memtrace follows), and every file is opened without blocking and read within bounds: a
//! crafted file can make memtrace skip it, never hang it or make it read without end.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    ffi::OsString,
    fs::File,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{FileExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::untrusted::{self, UntrustedError};

/// Longest string read from a target's file or environment entry that is a path or a list of
/// paths (glibc's own `PATH_MAX` is 4096).
const MAX_STRING: usize = 4096;
/// Most program headers read from one ELF file.
const MAX_PROGRAM_HEADERS: u64 = 1024;
/// Most bytes of one dynamic section read (65,536 entries of 16 bytes).
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;
/// Most `DT_NEEDED` entries taken from one object.
const MAX_NEEDED: usize = 4096;
/// Most directories taken from one search list.
const MAX_DIRECTORIES: usize = 1024;
/// Most objects loaded in all.
const MAX_OBJECTS: usize = 4096;
/// Most files tried in all: with the bounds above, a crafted program cannot make the search
/// take more than a fraction of a second.
const MAX_OPENS: u32 = 100_000;
/// Largest `/etc/ld.so.cache` read (a few hundred kilobytes in practice).
const MAX_CACHE_BYTES: u64 = 64 << 20;
/// Largest `/etc/ld.so.preload` and `ld.so.conf` file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most `ld.so.conf` files read (through `include`).
const MAX_CONFIG_FILES: usize = 256;

const PT_INTERP: u32 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_NODEFLIB: u64 = 0x800;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

#[derive(Debug, Error)]
pub enum LibraryError {
    // The causes are in the messages, not sources: printed as a chain they would show twice.
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: UntrustedError },
    #[error("{path} is not an ELF file memtrace can read: {reason}")]
    NotElf { path: String, reason: String },
    #[error("the libraries of {program} are more than memtrace follows ({what})")]
    TooMany { program: String, what: String },
}

/// A traced program about to run, as its dynamic loader will see it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The directory the program sees as `/`: `/` for a command memtrace starts,
    /// `/proc/PID/root` for a process it follows.
    pub root: PathBuf,
    /// The executable, as memtrace can open it (`/proc/PID/exe` for a process).
    pub program: PathBuf,
    /// The executable's absolute path inside the root, for `$ORIGIN`; `None` when unknown.
    pub program_path: Option<Vec<u8>>,
    /// The working directory inside the root, for relative paths; `None` when unknown.
    pub cwd: Option<Vec<u8>>,
    /// The program's environment (`LD_LIBRARY_PATH`, `LD_PRELOAD`).
    pub env: Vec<(OsString, OsString)>,
    /// Run set-user-ID or set-group-ID (`AT_SECURE`): the loader ignores the environment's paths.
    pub secure: bool,
}

/// One library found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The path as the loader found it inside the target's root (what `ldd` shows).
    pub name: PathBuf,
    /// The same file, as memtrace can open it (through `/proc/PID/root` for a process).
    pub path: PathBuf,
}

/// The libraries `target` will load, in lookup order after the program itself: preloaded ones,
/// then its dependencies breadth first (the dynamic loader among them). Empty for a statically
/// linked program. Libraries that cannot be found are left out.
pub fn load_order(target: &Target) -> Result<Vec<Library>, LibraryError> {
    let display = target.program.display().to_string();
    let file = untrusted::open(&target.program, untrusted::Links::Follow)
        .map_err(|cause| LibraryError::Read { path: display.clone(), cause })?;
    let program = Elf::read(&file).map_err(|reason| LibraryError::NotElf { path: display.clone(), reason })?;
    let Some(interpreter) = program.interpreter.clone() else {
        return Ok(Vec::new()); // static: the kernel loads no library
    };
    let root = untrusted::open_root(&target.root).map_err(|cause| LibraryError::Read {
        path: target.root.display().to_string(),
        cause: UntrustedError::Io(cause),
    })?;
    let mut search = Search::new(target, root, &program, display);
    let program_id = file.metadata().map(|metadata| (metadata.dev(), metadata.ino())).ok();
    search.add_program(program, program_id);
    search.add_interpreter(&interpreter);
    search.preload()?;
    search.dependencies()?;
    Ok(search.into_libraries())
}

/// What is read from an ELF file: enough to follow its dependencies.
#[derive(Debug, Clone, Default)]
struct Elf {
    class64: bool,
    machine: u16,
    file_type: u16,
    interpreter: Option<Vec<u8>>,
    needed: Vec<Vec<u8>>,
    soname: Option<Vec<u8>>,
    rpath: Option<Vec<u8>>,
    runpath: Option<Vec<u8>>,
    nodeflib: bool,
}

/// Reads little-endian fields at bounded offsets of a file.
struct Reader<'a> {
    file: &'a File,
    size: u64,
}

impl Reader<'_> {
    fn bytes(&self, offset: u64, length: u64) -> Result<Vec<u8>, String> {
        let end = offset.checked_add(length).ok_or("an offset overflows")?;
        if end > self.size {
            return Err(format!("{length} bytes at offset {offset} are past the end of the file"));
        }
        let length = usize::try_from(length).map_err(|_| "a length overflows")?;
        let mut buffer = vec![0; length];
        self.file.read_exact_at(&mut buffer, offset).map_err(|error| error.to_string())?;
        Ok(buffer)
    }

    /// A NUL-terminated string of at most [`MAX_STRING`] bytes starting at `offset`, within
    /// `limit` (the end of its string table).
    fn string(&self, offset: u64, limit: u64) -> Result<Vec<u8>, String> {
        let limit = limit.min(self.size);
        if offset >= limit {
            return Err("a string is past the end of its table".into());
        }
        let length = (limit - offset).min(MAX_STRING as u64 + 1);
        let mut bytes = self.bytes(offset, length)?;
        let end = bytes.iter().position(|&byte| byte == 0).ok_or("a string is too long or unterminated")?;
        bytes.truncate(end);
        Ok(bytes)
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// One program header: (type, offset, virtual address, size in the file).
type Segment = (u32, u64, u64, u64);

impl Elf {
    fn read(file: &File) -> Result<Self, String> {
        let size = file.metadata().map_err(|error| error.to_string())?.len();
        let reader = Reader { file, size };
        let header = reader.bytes(0, 64.min(size))?;
        if header.len() < 52 || header[..4] != *b"\x7fELF" {
            return Err("no ELF header".into());
        }
        let class64 = match header[4] {
            1 => false,
            2 => true,
            other => return Err(format!("unknown ELF class {other}")),
        };
        if header[5] != 1 {
            return Err("not little-endian".into());
        }
        if class64 && header.len() < 64 {
            return Err("a truncated ELF header".into());
        }
        let file_type = u16_at(&header, 16);
        let machine = u16_at(&header, 18);
        let (phoff, phentsize, phnum) = if class64 {
            (u64_at(&header, 32), u16_at(&header, 54), u16_at(&header, 56))
        } else {
            (u64::from(u32_at(&header, 28)), u16_at(&header, 42), u16_at(&header, 44))
        };
        let entry_size: u16 = if class64 { 56 } else { 32 };
        if phnum == 0 {
            return Ok(Self { class64, machine, file_type, ..Self::default() });
        }
        if phentsize != entry_size {
            return Err(format!("program headers of {phentsize} bytes"));
        }
        if u64::from(phnum) > MAX_PROGRAM_HEADERS {
            return Err(format!("{phnum} program headers, more than the {MAX_PROGRAM_HEADERS} memtrace reads"));
        }
        let table = reader.bytes(phoff, u64::from(phnum) * u64::from(entry_size))?;
        let segments: Vec<Segment> = table
            .chunks_exact(usize::from(entry_size))
            .map(|entry| {
                if class64 {
                    (u32_at(entry, 0), u64_at(entry, 8), u64_at(entry, 16), u64_at(entry, 32))
                } else {
                    (
                        u32_at(entry, 0),
                        u64::from(u32_at(entry, 4)),
                        u64::from(u32_at(entry, 8)),
                        u64::from(u32_at(entry, 16)),
                    )
                }
            })
            .collect();
        let mut elf = Self { class64, machine, file_type, ..Self::default() };
        if let Some(&(_, offset, _, filesz)) = segments.iter().find(|segment| segment.0 == PT_INTERP) {
            elf.interpreter = Some(reader.string(offset, offset.saturating_add(filesz))?);
        }
        if let Some(&(_, offset, _, filesz)) = segments.iter().find(|segment| segment.0 == PT_DYNAMIC) {
            elf.read_dynamic(&reader, &segments, offset, filesz)?;
        }
        Ok(elf)
    }

    fn read_dynamic(&mut self, reader: &Reader, segments: &[Segment], offset: u64, filesz: u64) -> Result<(), String> {
        if filesz > MAX_DYNAMIC_BYTES {
            return Err(format!("a dynamic section of {filesz} bytes, more than memtrace reads"));
        }
        let dynamic = reader.bytes(offset, filesz)?;
        let entry_size = if self.class64 { 16 } else { 8 };
        let mut strtab = None;
        let mut strsz = None;
        let mut needed = Vec::new();
        let (mut soname, mut rpath, mut runpath) = (None, None, None);
        for entry in dynamic.chunks_exact(entry_size) {
            let (tag, value) = if self.class64 {
                (u64_at(entry, 0), u64_at(entry, 8))
            } else {
                (u64::from(u32_at(entry, 0)), u64::from(u32_at(entry, 4)))
            };
            match tag {
                DT_NULL => break,
                DT_NEEDED if needed.len() < MAX_NEEDED => needed.push(value),
                DT_NEEDED => return Err(format!("more than {MAX_NEEDED} needed libraries")),
                DT_STRTAB => strtab = Some(value),
                DT_STRSZ => strsz = Some(value),
                DT_SONAME => soname = Some(value),
                DT_RPATH => rpath = Some(value),
                DT_RUNPATH => runpath = Some(value),
                DT_FLAGS_1 => self.nodeflib = value & DF_1_NODEFLIB != 0,
                _ => {}
            }
        }
        let wanted = !needed.is_empty() || soname.is_some() || rpath.is_some() || runpath.is_some();
        if !wanted {
            return Ok(());
        }
        let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
            return Err("a dynamic section without its string table".into());
        };
        // The string table's address, as a file offset through the loadable segments.
        let table = segments
            .iter()
            .filter(|segment| segment.0 == PT_LOAD)
            .find_map(|&(_, offset, vaddr, filesz)| {
                let within = strtab.checked_sub(vaddr).filter(|&delta| delta < filesz)?;
                offset.checked_add(within)
            })
            .ok_or("the string table is in no loadable segment")?;
        let end = table.saturating_add(strsz);
        let string = |index: u64| reader.string(table.saturating_add(index), end);
        for index in needed {
            // An unreadable name is passed over, as the loader would fail on it.
            if let Ok(name) = string(index) {
                self.needed.push(name);
            }
        }
        self.soname = soname.and_then(|index| string(index).ok());
        // An object with a DT_RUNPATH has its DT_RPATH ignored.
        self.runpath = runpath.and_then(|index| string(index).ok());
        self.rpath = if self.runpath.is_some() { None } else { rpath.and_then(|index| string(index).ok()) };
        Ok(())
    }
}

/// How the program's kind of objects is laid out on a Debian-family system, and which files
/// are of its kind.
#[derive(Debug, Clone)]
struct Flavour {
    class64: bool,
    machine: u16,
    /// `$LIB`.
    lib: &'static str,
    /// `$PLATFORM`.
    platform: &'static str,
    /// The loader's default directories.
    defaults: &'static [&'static str],
    /// `ld.so.cache` flags of a library of this kind.
    cache_flags: i32,
    /// `glibc-hwcaps` subdirectories this CPU can use, best first.
    hwcaps: Vec<&'static str>,
}

impl Flavour {
    fn of(elf: &Elf) -> Self {
        match (elf.class64, elf.machine) {
            (true, EM_X86_64) => Self {
                class64: true,
                machine: EM_X86_64,
                lib: "lib/x86_64-linux-gnu",
                platform: "x86_64",
                defaults: &[
                    "/lib/x86_64-linux-gnu",
                    "/usr/lib/x86_64-linux-gnu",
                    "/lib64",
                    "/usr/lib64",
                    "/lib",
                    "/usr/lib",
                ],
                cache_flags: 0x0303,
                hwcaps: x86_64_hwcaps(),
            },
            (false, EM_X86_64) => Self {
                class64: false,
                machine: EM_X86_64,
                lib: "lib/x86_64-linux-gnux32",
                platform: "x86_64",
                defaults: &["/lib/x86_64-linux-gnux32", "/usr/lib/x86_64-linux-gnux32", "/libx32", "/usr/libx32"],
                cache_flags: 0x0803,
                hwcaps: Vec::new(),
            },
            (false, EM_386) => Self {
                class64: false,
                machine: EM_386,
                lib: "lib/i386-linux-gnu",
                platform: "i686",
                defaults: &[
                    "/lib/i386-linux-gnu",
                    "/usr/lib/i386-linux-gnu",
                    "/lib32",
                    "/usr/lib32",
                    "/lib",
                    "/usr/lib",
                ],
                cache_flags: 0x0003,
                hwcaps: Vec::new(),
            },
            (class64, machine) => Self {
                class64,
                machine,
                lib: if class64 { "lib64" } else { "lib" },
                platform: "",
                defaults: if class64 { &["/lib64", "/usr/lib64", "/lib", "/usr/lib"] } else { &["/lib", "/usr/lib"] },
                cache_flags: -1,
                hwcaps: Vec::new(),
            },
        }
    }

    fn accepts(&self, elf: &Elf) -> bool {
        elf.class64 == self.class64 && elf.machine == self.machine && elf.file_type == ET_DYN
    }

    fn is_default_directory(&self, directory: &[u8]) -> bool {
        let directory = trim_slashes(directory);
        self.defaults.iter().any(|default| default.as_bytes() == directory)
    }
}

/// The x86-64 micro-architecture levels glibc looks for in `glibc-hwcaps`, best first.
fn x86_64_hwcaps() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 =
            has!("cmpxchg16b") && has!("popcnt") && has!("sse3") && has!("sse4.1") && has!("sse4.2") && has!("ssse3");
        let v3 = v2
            && has!("avx")
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("f16c")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("xsave");
        let v4 = v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
        [("x86-64-v4", v4), ("x86-64-v3", v3), ("x86-64-v2", v2)]
            .into_iter()
            .filter_map(|(name, supported)| supported.then_some(name))
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    &path[..end]
}

/// `directory/name`, as the loader joins them (one slash, `directory`'s trailing ones dropped;
/// an empty directory, the working one, adds nothing).
fn join(directory: &[u8], name: &[u8]) -> Vec<u8> {
    if directory.is_empty() {
        return name.to_vec();
    }
    let mut path = trim_slashes(directory).to_vec();
    if path != b"/" {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Everything up to the last slash; `/` for a file in the root.
fn dirname(path: &[u8]) -> Option<Vec<u8>> {
    let slash = path.iter().rposition(|&byte| byte == b'/')?;
    Some(if slash == 0 { b"/".to_vec() } else { path[..slash].to_vec() })
}

/// One object loaded.
struct Loaded {
    /// The path the loader found it at (empty for the program, as glibc has it).
    name: Vec<u8>,
    /// The names it answers to: the name it was asked for, its path, its soname.
    aliases: Vec<Vec<u8>>,
    id: Option<(u64, u64)>,
    elf: Elf,
    /// The object whose DT_NEEDED loaded it (the program for preloads).
    loader: Option<usize>,
    /// `$ORIGIN`: its directory.
    origin: Option<Vec<u8>>,
    /// Where memtrace opens it; `None` for the program.
    path: Option<PathBuf>,
}

/// Where a name is looked up, per its kind.
enum Place {
    /// A list of directories (each with its glibc-hwcaps subdirectories first).
    Directories(Vec<Vec<u8>>),
    /// `/etc/ld.so.cache`.
    Cache,
}

struct Search<'a> {
    target: &'a Target,
    root: OwnedFd,
    flavour: Flavour,
    display: String,
    objects: Vec<Loaded>,
    /// Index of the dynamic loader in `objects`.
    interpreter: Option<usize>,
    /// The objects in the order the loader chains them: as they are loaded, the dynamic loader
    /// where it is first needed (at the end if never).
    order: Vec<usize>,
    opens: u32,
    cache: Option<Option<Cache>>,
    configured: Option<Vec<Vec<u8>>>,
}

impl<'a> Search<'a> {
    fn new(target: &'a Target, root: OwnedFd, program: &Elf, display: String) -> Self {
        Self {
            target,
            root,
            flavour: Flavour::of(program),
            display,
            objects: Vec::new(),
            interpreter: None,
            order: Vec::new(),
            opens: 0,
            cache: None,
            configured: None,
        }
    }

    fn add_program(&mut self, elf: Elf, id: Option<(u64, u64)>) {
        let origin = self.target.program_path.as_deref().and_then(dirname);
        // glibc's program answers to no name (the same file found again is still caught by `id`).
        self.objects.push(Loaded { name: Vec::new(), aliases: Vec::new(), id, elf, loader: None, origin, path: None });
    }

    /// The dynamic loader is loaded before anything else, under its `PT_INTERP` path and its
    /// soname.
    fn add_interpreter(&mut self, interpreter: &[u8]) {
        let absolute = self.absolute(interpreter);
        let Some((file, elf)) = self.open_object(&absolute, false) else {
            log::debug!("cannot read the dynamic loader {} of {}", String::from_utf8_lossy(interpreter), self.display);
            return;
        };
        let Some(path) = self.memtrace_path(&absolute, &file) else { return };
        let mut aliases = vec![interpreter.to_vec()];
        aliases.extend(elf.soname.iter().cloned());
        let id = file.metadata().ok().map(|metadata| (metadata.dev(), metadata.ino()));
        self.interpreter = Some(self.objects.len());
        self.objects.push(Loaded {
            name: interpreter.to_vec(),
            aliases,
            id,
            elf,
            loader: None,
            origin: dirname(&absolute),
            path: Some(path),
        });
    }

    /// `LD_PRELOAD`, then `/etc/ld.so.preload`, each loaded as a dependency of the program.
    fn preload(&mut self) -> Result<(), LibraryError> {
        let secure = self.target.secure;
        if let Some(list) = self.environment("LD_PRELOAD").filter(|list| !list.is_empty()) {
            for name in list.split(|&byte| byte == b' ' || byte == b':').filter(|name| !name.is_empty()) {
                if name.len() > MAX_STRING || (secure && name.contains(&b'/')) {
                    continue;
                }
                self.load(0, name, secure)?;
            }
        }
        let preload = untrusted::open_in_root(&self.root, b"/etc/ld.so.preload")
            .and_then(|file| untrusted::read_capped(&file, MAX_CONFIG_BYTES));
        if let Ok(text) = preload {
            let names: Vec<Vec<u8>> = text
                .split(|&byte| byte == b'\n')
                .flat_map(|line| {
                    let line = line.split(|&byte| byte == b'#').next().unwrap_or_default();
                    line.split(|byte| b" \t\r:".contains(byte))
                        .filter(|name| !name.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>()
                })
                .collect();
            for name in names {
                if name.len() <= MAX_STRING {
                    self.load(0, &name, false)?;
                }
            }
        }
        Ok(())
    }

    /// Each object's DT_NEEDED in turn, the program's first, as they are loaded.
    fn dependencies(&mut self) -> Result<(), LibraryError> {
        let mut queue: VecDeque<usize> = VecDeque::from([0]);
        // The preloads' dependencies come after the program's own.
        queue.extend((1..self.objects.len()).filter(|&index| Some(index) != self.interpreter));
        let mut seen: HashSet<usize> = queue.iter().copied().collect();
        while let Some(index) = queue.pop_front() {
            let needed = self.objects[index].elf.needed.clone();
            for name in needed {
                if let Some(loaded) = self.load(index, &name, false)?
                    && seen.insert(loaded)
                {
                    queue.push_back(loaded);
                }
            }
        }
        Ok(())
    }

    fn into_libraries(mut self) -> Vec<Library> {
        if let Some(interpreter) = self.interpreter
            && !self.order.contains(&interpreter)
        {
            self.order.push(interpreter);
        }
        let mut objects: Vec<Option<Loaded>> = self.objects.into_iter().map(Some).collect();
        self.order
            .into_iter()
            .filter_map(|index| objects.get_mut(index)?.take())
            .filter_map(|object| {
                Some(Library { name: PathBuf::from(OsString::from_vec(object.name)), path: object.path? })
            })
            .collect()
    }

    fn environment(&self, key: &str) -> Option<Vec<u8>> {
        self.target
            .env
            .iter()
            .find(|(name, _)| name.as_bytes() == key.as_bytes())
            .map(|(_, value)| value.as_bytes().to_vec())
    }

    /// Loads `name` as a dependency of object `loader`; returns the object it is (new or
    /// already loaded), or `None` when it cannot be found.
    fn load(&mut self, loader: usize, name: &[u8], secure_preload: bool) -> Result<Option<usize>, LibraryError> {
        if let Some(index) = self.objects.iter().position(|object| object.aliases.iter().any(|alias| alias == name)) {
            self.place(index);
            return Ok(Some(index));
        }
        if self.objects.len() >= MAX_OBJECTS {
            return Err(self.too_many(format!("more than {MAX_OBJECTS} objects")));
        }
        let found = if name.contains(&b'/') {
            let origin = self.objects[loader].origin.clone();
            match self.expand(name, origin.as_deref()) {
                Some(path) => self.try_file(&path)?,
                None => None,
            }
        } else {
            self.search(loader, name, secure_preload)?
        };
        let Some((found_name, file, elf)) = found else {
            log::debug!("{} needs {}, which cannot be found", self.display, String::from_utf8_lossy(name));
            return Ok(None);
        };
        let id = file.metadata().ok().map(|metadata| (metadata.dev(), metadata.ino()));
        if let Some(index) = id.and_then(|id| self.objects.iter().position(|object| object.id == Some(id))) {
            self.objects[index].aliases.push(name.to_vec());
            self.place(index);
            return Ok(Some(index));
        }
        let absolute = self.absolute(&found_name);
        let Some(path) = self.memtrace_path(&absolute, &file) else { return Ok(None) };
        let mut aliases = vec![name.to_vec(), found_name.clone()];
        aliases.extend(elf.soname.iter().cloned());
        self.objects.push(Loaded {
            name: found_name,
            aliases,
            id,
            elf,
            loader: Some(loader),
            origin: dirname(&absolute),
            path: Some(path),
        });
        self.order.push(self.objects.len() - 1);
        Ok(Some(self.objects.len() - 1))
    }

    /// The dynamic loader takes its place in the chain where it is first needed.
    fn place(&mut self, index: usize) {
        if Some(index) == self.interpreter && !self.order.contains(&index) {
            self.order.push(index);
        }
    }

    /// Looks a bare name up in the loader's order of places.
    fn search(
        &mut self,
        loader: usize,
        name: &[u8],
        secure_preload: bool,
    ) -> Result<Option<(Vec<u8>, File, Elf)>, LibraryError> {
        let nodeflib = self.objects[loader].elf.nodeflib;
        let mut places = Vec::new();
        if !secure_preload {
            // DT_RPATH of the loader and of the objects that loaded it, unless it has a DT_RUNPATH.
            if self.objects[loader].elf.runpath.is_none() {
                let mut next = Some(loader);
                let mut hops = 0;
                while let Some(index) = next.filter(|_| hops <= MAX_OBJECTS) {
                    if let Some(rpath) = self.objects[index].elf.rpath.clone() {
                        places.push(Place::Directories(self.directories(&rpath, index)));
                    }
                    next = self.objects[index].loader;
                    hops += 1;
                }
            }
            if !self.target.secure
                && let Some(list) = self.environment("LD_LIBRARY_PATH").filter(|list| !list.is_empty())
            {
                let list = &list[..list.len().min(MAX_STRING * 32)];
                places.push(Place::Directories(self.directories_split(list, b":;", 0)));
            }
            if let Some(runpath) = self.objects[loader].elf.runpath.clone() {
                places.push(Place::Directories(self.directories(&runpath, loader)));
            }
        }
        places.push(Place::Cache);
        if !nodeflib {
            places.push(Place::Directories(self.flavour.defaults.iter().map(|dir| dir.as_bytes().to_vec()).collect()));
        }
        for place in places {
            let found = match place {
                Place::Directories(directories) => self.in_directories(&directories, name, secure_preload)?,
                Place::Cache => self.in_cache(name, nodeflib, secure_preload)?,
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn in_directories(
        &mut self,
        directories: &[Vec<u8>],
        name: &[u8],
        setuid_only: bool,
    ) -> Result<Option<(Vec<u8>, File, Elf)>, LibraryError> {
        let hwcaps: Vec<Vec<u8>> =
            self.flavour.hwcaps.iter().map(|level| format!("glibc-hwcaps/{level}").into_bytes()).collect();
        for directory in directories {
            if setuid_only && !self.flavour.is_default_directory(directory) {
                continue;
            }
            for subdirectory in hwcaps.iter().map(|sub| join(directory, sub)).chain([directory.clone()]) {
                let path = join(&subdirectory, name);
                if let Some((file, elf)) = self.try_file_checked(&path, setuid_only)? {
                    return Ok(Some((path, file, elf)));
                }
            }
        }
        Ok(None)
    }

    /// `/etc/ld.so.cache`, or when it cannot be read, the directories of `/etc/ld.so.conf`.
    fn in_cache(
        &mut self,
        name: &[u8],
        nodeflib: bool,
        setuid_only: bool,
    ) -> Result<Option<(Vec<u8>, File, Elf)>, LibraryError> {
        if self.cache.is_none() {
            let cache = untrusted::open_in_root(&self.root, b"/etc/ld.so.cache")
                .and_then(|file| untrusted::read_capped(&file, MAX_CACHE_BYTES))
                .map_err(|error| error.to_string())
                .and_then(Cache::parse);
            if let Err(error) = &cache {
                log::debug!("ld.so.cache of {}: {error}; taking the directories of ld.so.conf", self.display);
            }
            self.cache = Some(cache.ok());
        }
        if let Some(Some(cache)) = &self.cache {
            let Some(path) = cache.lookup(name, self.flavour.cache_flags, &self.flavour.hwcaps) else {
                return Ok(None);
            };
            let in_default = dirname(&path).is_some_and(|directory| self.flavour.is_default_directory(&directory));
            // DF_1_NODEFLIB leaves out the default directories; a secure preload takes nothing else.
            if (nodeflib && in_default) || (setuid_only && !in_default) {
                return Ok(None);
            }
            return Ok(self.try_file_checked(&path, setuid_only)?.map(|(file, elf)| (path, file, elf)));
        }
        if setuid_only {
            return Ok(None);
        }
        if self.configured.is_none() {
            let mut directories = Vec::new();
            let mut files = 0;
            read_configuration(&self.root, b"/etc/ld.so.conf", &mut directories, &mut files, 0);
            self.configured = Some(directories);
        }
        let directories = self.configured.clone().unwrap_or_default();
        self.in_directories(&directories, name, false)
    }

    fn try_file(&mut self, path: &[u8]) -> Result<Option<(Vec<u8>, File, Elf)>, LibraryError> {
        Ok(self.try_file_checked(path, false)?.map(|(file, elf)| (path.to_vec(), file, elf)))
    }

    /// Opens a candidate and keeps it if it is a shared object of the program's kind.
    fn try_file_checked(&mut self, path: &[u8], setuid_only: bool) -> Result<Option<(File, Elf)>, LibraryError> {
        self.opens += 1;
        if self.opens > MAX_OPENS {
            return Err(self.too_many(format!("more than {MAX_OPENS} files tried")));
        }
        let absolute = self.absolute(path);
        let Some((file, elf)) = self.open_object(&absolute, true) else { return Ok(None) };
        if setuid_only && file.metadata().is_ok_and(|metadata| metadata.mode() & libc::S_ISUID == 0) {
            return Ok(None);
        }
        Ok(Some((file, elf)))
    }

    /// Opens an object inside the root; with `library`, only a shared object of the program's
    /// class and machine.
    fn open_object(&self, absolute: &[u8], library: bool) -> Option<(File, Elf)> {
        let file = untrusted::open_in_root(&self.root, absolute).ok()?;
        match Elf::read(&file) {
            Ok(elf) if !library || self.flavour.accepts(&elf) => Some((file, elf)),
            Ok(_) => {
                log::debug!("passing over {}: another kind of object", String::from_utf8_lossy(absolute));
                None
            }
            Err(reason) => {
                log::debug!("passing over {}: {reason}", String::from_utf8_lossy(absolute));
                None
            }
        }
    }

    /// A path inside the root made absolute against the working directory.
    fn absolute(&self, path: &[u8]) -> Vec<u8> {
        if path.first() == Some(&b'/') {
            return path.to_vec();
        }
        join(self.target.cwd.as_deref().unwrap_or(b"/"), path)
    }

    /// A path memtrace can open that names the very file `file` (found at `absolute` inside the
    /// root): in a root other than memtrace's own, `/proc/PID/root` + the path when that leads to
    /// the same file, or failing that the path the kernel gives the open file.
    fn memtrace_path(&self, absolute: &[u8], file: &File) -> Option<PathBuf> {
        if self.target.root == Path::new("/") {
            return Some(PathBuf::from(OsString::from_vec(absolute.to_vec())));
        }
        let id = file.metadata().ok().map(|metadata| (metadata.dev(), metadata.ino()))?;
        let same = |candidate: &Path| {
            std::fs::metadata(candidate).is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == id)
        };
        let mut through_root = self.target.root.as_os_str().as_bytes().to_vec();
        through_root.extend_from_slice(absolute);
        let through_root = PathBuf::from(OsString::from_vec(through_root));
        if same(&through_root) {
            return Some(through_root);
        }
        let kernel_path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        if same(&kernel_path) {
            return Some(kernel_path);
        }
        log::debug!("{} cannot be opened from outside its root", String::from_utf8_lossy(absolute));
        None
    }

    /// The directories of a DT_RPATH or DT_RUNPATH of object `owner`.
    fn directories(&self, list: &[u8], owner: usize) -> Vec<Vec<u8>> {
        self.directories_split(list, b":", owner)
    }

    /// Splits a search list, expanding its dynamic string tokens against `owner`'s origin;
    /// an empty element is the working directory.
    fn directories_split(&self, list: &[u8], separators: &[u8], owner: usize) -> Vec<Vec<u8>> {
        let origin = self.objects.get(owner).and_then(|object| object.origin.clone());
        list.split(|byte| separators.contains(byte))
            .take(MAX_DIRECTORIES)
            .filter_map(|element| {
                // An empty element is the working directory: the bare name is opened.
                if element.is_empty() {
                    return Some(Vec::new());
                }
                let expanded = self.expand(element, origin.as_deref()).filter(|expanded| !expanded.is_empty())?;
                if self.target.secure && contains_origin(element) && !self.flavour.is_default_directory(&expanded) {
                    return None;
                }
                Some(expanded)
            })
            .collect()
    }

    /// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in braces) as glibc does; `None` when
    /// `$ORIGIN` is needed and unknown.
    fn expand(&self, text: &[u8], origin: Option<&[u8]>) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        while let Some((&first, after)) = rest.split_first() {
            if first != b'$' {
                out.push(first);
                rest = after;
                continue;
            }
            let matched = ["ORIGIN", "PLATFORM", "LIB"]
                .into_iter()
                .find_map(|token| dynamic_string_token(after, token.as_bytes()).map(|length| (token, length)));
            let Some((token, length)) = matched else {
                out.push(b'$');
                rest = after;
                continue;
            };
            match token {
                "ORIGIN" => out.extend_from_slice(origin?),
                "PLATFORM" if !self.flavour.platform.is_empty() => {
                    out.extend_from_slice(self.flavour.platform.as_bytes())
                }
                "PLATFORM" => return None,
                _ => out.extend_from_slice(self.flavour.lib.as_bytes()),
            }
            rest = &after[length..];
            if out.len() > MAX_STRING * 2 {
                return None;
            }
        }
        Some(out)
    }

    fn too_many(&self, what: String) -> LibraryError {
        LibraryError::TooMany { program: self.display.clone(), what }
    }
}

fn contains_origin(element: &[u8]) -> bool {
    element.windows(7).any(|window| window == b"$ORIGIN") || element.windows(9).any(|window| window == b"${ORIGIN}")
}

/// The length of `token` (`NAME` or `{NAME}`) at the start of `text` (just after a `$`), if
/// it is one: an unbraced name must not run on into more name characters.
fn dynamic_string_token(text: &[u8], name: &[u8]) -> Option<usize> {
    if let Some(braced) = text.strip_prefix(b"{") {
        return (braced.starts_with(name) && braced.get(name.len()) == Some(&b'}')).then_some(name.len() + 2);
    }
    let next = text.strip_prefix(name)?.first();
    (!next.is_some_and(|&byte| byte.is_ascii_alphanumeric() || byte == b'_')).then_some(name.len())
}

/// Reads the directories an `ld.so.conf` file lists, following `include` lines (a `*` in the
/// last component of an included path matches any characters).
fn read_configuration(root: &OwnedFd, path: &[u8], directories: &mut Vec<Vec<u8>>, files: &mut usize, depth: u32) {
    *files += 1;
    if depth > 8 || *files > MAX_CONFIG_FILES {
        return;
    }
    let Ok(text) = untrusted::open_in_root(root, path).and_then(|file| untrusted::read_capped(&file, MAX_CONFIG_BYTES))
    else {
        return;
    };
    for line in text.split(|&byte| byte == b'\n') {
        let line = line.split(|&byte| byte == b'#').next().unwrap_or_default();
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"hwcap ") {
            continue;
        }
        if let Some(pattern) =
            line.strip_prefix(b"include").filter(|rest| rest.first().is_some_and(u8::is_ascii_whitespace))
        {
            for pattern in pattern.split(u8::is_ascii_whitespace).filter(|word| !word.is_empty()) {
                let pattern = match pattern.first() {
                    Some(b'/') => pattern.to_vec(),
                    _ => join(&dirname(path).unwrap_or_else(|| b"/".to_vec()), pattern),
                };
                for included in matching_files(root, &pattern) {
                    read_configuration(root, &included, directories, files, depth + 1);
                }
            }
            continue;
        }
        // `DIR` or the old `DIR=TYPE`.
        let directory = line.split(|&byte| byte == b'=').next().unwrap_or_default().trim_ascii();
        if directory.first() == Some(&b'/')
            && directories.len() < MAX_DIRECTORIES
            && !directories.iter().any(|known| known == directory)
        {
            directories.push(directory.to_vec());
        }
    }
}

/// The files inside the root matching `pattern`, sorted, when its last component has `*`s.
fn matching_files(root: &OwnedFd, pattern: &[u8]) -> Vec<Vec<u8>> {
    let Some(directory) = dirname(pattern) else { return Vec::new() };
    let file_pattern = &pattern[pattern.iter().rposition(|&byte| byte == b'/').map_or(0, |slash| slash + 1)..];
    if !file_pattern.contains(&b'*') {
        return vec![pattern.to_vec()];
    }
    // Listed through the root: /proc/self/fd/ROOT + directory, with the root's links refused
    // by opening each match with open_in_root afterwards.
    let listing = PathBuf::from(OsString::from_vec(
        [format!("/proc/self/fd/{}", root.as_raw_fd()).into_bytes(), directory.clone()].concat(),
    ));
    let Ok(entries) = std::fs::read_dir(listing) else { return Vec::new() };
    let mut matches: Vec<Vec<u8>> = entries
        .take(MAX_CONFIG_FILES)
        .flatten()
        .map(|entry| entry.file_name().into_vec())
        .filter(|name| wildcard_match(file_pattern, name))
        .map(|name| join(&directory, &name))
        .collect();
    matches.sort();
    matches
}

/// `*` matches any run of bytes; everything else itself.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let mut parts = pattern.split(|&byte| byte == b'*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&[u8]> = parts.collect();
    for (index, part) in parts.iter().enumerate() {
        if index + 1 == parts.len() {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.windows(part.len().max(1)).position(|window| part.is_empty() || window == *part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// `/etc/ld.so.cache` in glibc's `glibc-ld.so.cache1.1` format (after the old `ld.so-1.7.0`
/// table, if there is one).
struct Cache {
    bytes: Vec<u8>,
    /// Where the new format starts: its string offsets count from there.
    base: usize,
    /// (flags, key, value, hwcap) of each entry, in file order.
    entries: Vec<(i32, u32, u32, u64)>,
    /// The entries of each name, in file order.
    by_name: HashMap<Vec<u8>, Vec<usize>>,
    /// The `glibc-hwcaps` subdirectory names of the extension section.
    hwcaps: Vec<Vec<u8>>,
}

const CACHE_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_CACHE_MAGIC: &[u8] = b"ld.so-1.7.0";
const CACHE_HEADER: usize = 48;
const CACHE_ENTRY: usize = 24;
const CACHE_EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const HWCAP_EXTENSION: u64 = 1 << 62;

impl Cache {
    fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut base = 0;
        if bytes.starts_with(OLD_CACHE_MAGIC) {
            // 11 bytes of magic, padding, a count, then 12-byte entries; the new format follows,
            // aligned to 8 bytes.
            let old_entries = u32_at(&bytes, 12) as usize;
            base = old_entries
                .checked_mul(12)
                .and_then(|size| size.checked_add(16))
                .map(|end| end.div_ceil(8) * 8)
                .filter(|&end| end <= bytes.len())
                .ok_or("a truncated old-format table")?;
        }
        let new = &bytes[base..];
        if !new.starts_with(CACHE_MAGIC) || new.len() < CACHE_HEADER {
            return Err("not in the glibc-ld.so.cache1.1 format".into());
        }
        let count = u32_at(new, 20) as usize;
        let extension = u32_at(new, 32) as usize;
        let table_end = count
            .checked_mul(CACHE_ENTRY)
            .and_then(|size| size.checked_add(CACHE_HEADER))
            .filter(|&end| end <= new.len())
            .ok_or("more entries than the file holds")?;
        let entries: Vec<(i32, u32, u32, u64)> = new[CACHE_HEADER..table_end]
            .chunks_exact(CACHE_ENTRY)
            .map(|entry| (u32_at(entry, 0) as i32, u32_at(entry, 4), u32_at(entry, 8), u64_at(entry, 16)))
            .collect();
        let mut cache = Self { bytes, base, entries, by_name: HashMap::new(), hwcaps: Vec::new() };
        let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (index, &(_, key, _, _)) in cache.entries.iter().enumerate() {
            if let Some(name) = cache.string(key) {
                by_name.entry(name.to_vec()).or_default().push(index);
            }
        }
        cache.by_name = by_name;
        cache.hwcaps = cache.hwcaps_names(extension);
        Ok(cache)
    }

    /// The string at `offset` from the start of the new format, if it is in the file and ends.
    fn string(&self, offset: u32) -> Option<&[u8]> {
        let start = self.base.checked_add(offset as usize)?;
        let rest = self.bytes.get(start..)?;
        let rest = &rest[..rest.len().min(MAX_STRING + 1)];
        let end = rest.iter().position(|&byte| byte == 0)?;
        Some(&rest[..end])
    }

    fn hwcaps_names(&self, extension: usize) -> Vec<Vec<u8>> {
        let new = &self.bytes[self.base..];
        if extension == 0
            || extension.checked_add(8).is_none_or(|end| end > new.len())
            || u32_at(new, extension) != CACHE_EXTENSION_MAGIC
        {
            return Vec::new();
        }
        let sections = (u32_at(new, extension + 4) as usize).min(64);
        for section in 0..sections {
            let at = extension + 8 + section * 16;
            if at + 16 > new.len() {
                break;
            }
            // Tag 1: the glibc-hwcaps subdirectory names, as string offsets.
            if u32_at(new, at) != 1 {
                continue;
            }
            let (offset, size) = (u32_at(new, at + 8) as usize, u32_at(new, at + 12) as usize);
            let Some(table) = offset.checked_add(size).and_then(|end| new.get(offset..end)) else { break };
            return table
                .chunks_exact(4)
                .take(1024)
                .map(|entry| self.string(u32_at(entry, 0)).unwrap_or_default().to_vec())
                .collect();
        }
        Vec::new()
    }

    /// The path glibc's loader takes for `name`: the best glibc-hwcaps entry this CPU supports,
    /// else the first plain entry of the right kind.
    fn lookup(&self, name: &[u8], flags: i32, supported: &[&str]) -> Option<Vec<u8>> {
        let mut best: Option<(usize, u32)> = None;
        for &index in self.by_name.get(name)? {
            let (entry_flags, _, value, hwcap) = self.entries[index];
            if entry_flags != flags && entry_flags != 1 {
                continue;
            }
            if hwcap >> 32 == HWCAP_EXTENSION >> 32 {
                let Some(subdirectory) = self.hwcaps.get(hwcap as u32 as usize) else { continue };
                let priority = supported.iter().position(|level| level.as_bytes() == subdirectory.as_slice());
                if let Some(priority) = priority
                    && best.is_none_or(|(best_priority, _)| priority < best_priority)
                {
                    best = Some((priority, value));
                }
                continue;
            }
            if hwcap != 0 {
                continue; // a legacy hwcap subdirectory, not searched
            }
            if best.is_none() {
                best = Some((usize::MAX, value));
            }
            break;
        }
        best.and_then(|(_, value)| self.string(value)).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// What `ldd` lists for `program` under `env`, run in `cwd`: each library's path, in its
    /// order, without the vdso and the libraries not found.
    fn ldd_in(program: &Path, env: &[(&str, &str)], cwd: &Path) -> Vec<String> {
        let output = Command::new("ldd")
            .arg(program)
            .current_dir(cwd)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("ldd runs");
        assert!(output.status.success(), "ldd {}: {}", program.display(), String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let (path, named) = match line.split_once(" => ") {
                    Some((_, path)) => (path, true),
                    None => (line, false),
                };
                let path = path.rsplit_once(" (").map_or(path, |(path, _)| path);
                // A library found under the very name asked for is listed without `=>`.
                let vdso = !named && (path.starts_with("linux-vdso") || path.starts_with("linux-gate"));
                (path != "not found" && !vdso).then(|| path.to_owned())
            })
            .collect()
    }

    /// What [`load_order`] finds for `program` under `env`, with `cwd` as the working directory.
    fn ours_in(program: &Path, env: &[(&str, &str)], cwd: &Path) -> Vec<String> {
        let target = Target {
            root: PathBuf::from("/"),
            program: program.to_path_buf(),
            program_path: program.canonicalize().ok().map(|path| path.into_os_string().into_vec()),
            cwd: Some(cwd.as_os_str().as_bytes().to_vec()),
            env: env.iter().map(|(key, value)| (OsString::from(key), OsString::from(value))).collect(),
            secure: false,
        };
        let libraries = load_order(&target).unwrap_or_else(|error| panic!("{}: {error}", program.display()));
        for library in &libraries {
            // memtrace's path is the same file, made absolute.
            assert!(library.path.is_absolute() && library.path.is_file(), "{library:?}");
            assert!(library.path.ends_with(&library.name) || library.path == library.name, "{library:?}");
        }
        libraries.iter().map(|library| library.name.display().to_string()).collect()
    }

    fn ours(program: &Path, env: &[(&str, &str)]) -> Vec<String> {
        ours_in(program, env, Path::new("/"))
    }

    fn assert_like_ldd_in(program: &Path, env: &[(&str, &str)], cwd: &Path) {
        let expected = ldd_in(program, env, cwd);
        assert!(expected.len() > 1, "ldd lists too little for {}: {expected:?}", program.display());
        assert_eq!(ours_in(program, env, cwd), expected, "{} with {env:?} in {}", program.display(), cwd.display());
    }

    fn assert_like_ldd(program: &Path, env: &[(&str, &str)]) {
        assert_like_ldd_in(program, env, Path::new("/"));
    }

    fn cc(dir: &Path, args: &[&str]) {
        let status = Command::new("cc").current_dir(dir).args(args).status().expect("cc runs");
        assert!(status.success(), "cc {args:?}");
    }

    #[test]
    fn system_programs_load_what_ldd_lists() {
        let mut tried = 0;
        for program in [
            "/usr/bin/python3",
            "/usr/bin/ssh",
            "/usr/bin/bash",
            "/usr/bin/ls",
            "/usr/bin/gdb",
            "/usr/bin/cmake",
            "/usr/bin/valgrind.bin",
        ] {
            let program = Path::new(program);
            if !program.exists() {
                continue;
            }
            let program = program.canonicalize().unwrap();
            // A script (such as a python3 wrapper) has nothing to compare.
            let elf = Elf::read(&File::open(&program).unwrap());
            if elf.is_err() || elf.is_ok_and(|elf| elf.interpreter.is_none()) {
                continue;
            }
            assert_like_ldd(&program, &[]);
            tried += 1;
        }
        assert!(tried >= 2, "fewer than two system programs to compare with");
    }

    #[test]
    fn a_cxx_program_loads_what_ldd_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("widget.cpp"), "#include <string>\n#include <iostream>\nint main() { std::string s(100, 'x'); std::cout << s.size() << std::endl; }\n").unwrap();
        let status = Command::new("g++")
            .current_dir(dir.path())
            .args(["-o", "widget", "widget.cpp"])
            .status()
            .expect("g++ runs");
        assert!(status.success());
        let program = dir.path().join("widget");
        assert_like_ldd(&program, &[]);
        assert!(ours(&program, &[]).iter().any(|path| path.contains("libstdc++")));
    }

    #[test]
    fn search_paths_and_tokens_order_like_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a", "b", "lib/x86_64-linux-gnu", "bin", "pre"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("one.c"), "int one(void) { return 1; }\n").unwrap();
        std::fs::write(root.join("two.c"), "int one(void); int two(void) { return one() + 1; }\n").unwrap();
        std::fs::write(root.join("main.c"), "int two(void); int main(void) { return two() - 2; }\n").unwrap();
        // libone in a/ and in b/ (which one is found tells the order), libtwo (needing libone) in
        // lib/x86_64-linux-gnu found through $LIB.
        cc(root, &["-shared", "-fPIC", "-o", "a/libone.so", "one.c"]);
        cc(root, &["-shared", "-fPIC", "-o", "b/libone.so", "one.c"]);
        cc(root, &["-shared", "-fPIC", "-o", "pre/libpre.so", "one.c"]);
        cc(root, &["-shared", "-fPIC", "-o", "lib/x86_64-linux-gnu/libtwo.so", "two.c", "-La", "-lone"]);
        // DT_RUNPATH with $ORIGIN and $LIB.
        cc(
            root,
            &[
                "-o",
                "bin/runpath",
                "main.c",
                "-Llib/x86_64-linux-gnu",
                "-ltwo",
                "-La",
                "-lone",
                "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../${LIB}:$ORIGIN/../b",
            ],
        );
        // DT_RPATH: searched before LD_LIBRARY_PATH, and for libtwo's needs too.
        cc(
            root,
            &[
                "-o",
                "bin/rpath",
                "main.c",
                "-Llib/x86_64-linux-gnu",
                "-ltwo",
                "-La",
                "-lone",
                "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../$LIB:$ORIGIN/../b",
            ],
        );
        let a = root.join("a").display().to_string();
        let pre = root.join("pre/libpre.so").display().to_string();
        for program in ["bin/runpath", "bin/rpath"] {
            let program = root.join(program);
            assert_like_ldd(&program, &[]);
            assert_like_ldd(&program, &[("LD_LIBRARY_PATH", &a)]);
            assert_like_ldd(
                &program,
                &[("LD_LIBRARY_PATH", &format!("/nonexistent::{a}")), ("LD_PRELOAD", &format!("{pre} libm.so.6"))],
            );
        }
        // The orders differ: LD_LIBRARY_PATH wins over DT_RUNPATH, DT_RPATH over it.
        let runpath = ours(&root.join("bin/runpath"), &[("LD_LIBRARY_PATH", &a)]);
        let rpath = ours(&root.join("bin/rpath"), &[("LD_LIBRARY_PATH", &a)]);
        assert!(runpath.iter().any(|path| path.ends_with("/a/libone.so")), "{runpath:?}");
        assert!(rpath.iter().any(|path| path.ends_with("/b/libone.so")), "{rpath:?}");
        // Relative LD_LIBRARY_PATH entries, and empty ones, are the working directory's.
        assert_like_ldd_in(&root.join("bin/runpath"), &[("LD_LIBRARY_PATH", "a")], root);
        assert_like_ldd_in(&root.join("bin/runpath"), &[("LD_LIBRARY_PATH", ":lib")], &root.join("a"));
        let relative = ours_in(&root.join("bin/runpath"), &[("LD_LIBRARY_PATH", "a")], root);
        assert!(relative.iter().any(|path| path == "a/libone.so"), "{relative:?}");
    }

    #[test]
    fn libraries_of_another_class_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("wrong")).unwrap();
        std::fs::create_dir_all(root.join("right")).unwrap();
        std::fs::write(root.join("one.c"), "int one(void) { return 1; }\n").unwrap();
        std::fs::write(root.join("main.c"), "int one(void); int main(void) { return one() - 1; }\n").unwrap();
        cc(root, &["-shared", "-fPIC", "-o", "right/libone.so", "one.c"]);
        // A 32-bit shared object made by hand (its header is all either search reads).
        let mut header = vec![0u8; 64];
        header[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        header[16] = ET_DYN as u8;
        header[18] = EM_386 as u8;
        std::fs::write(root.join("wrong/libone.so"), &header).unwrap();
        cc(root, &["-o", "main", "main.c", "-Lright", "-lone", "-Wl,-rpath,$ORIGIN/wrong:$ORIGIN/right"]);
        let found = ours(&root.join("main"), &[]);
        assert_eq!(found[0], format!("{}/right/libone.so", root.display()), "{found:?}");
        assert_like_ldd(&root.join("main"), &[]);
        // Something that is not ELF at all is passed over too (glibc's loader would give up).
        std::fs::write(root.join("wrong/libone.so"), b"INPUT(-lone)\n").unwrap();
        assert_eq!(ours(&root.join("main"), &[])[0], format!("{}/right/libone.so", root.display()));
        // So is a FIFO, without blocking.
        std::fs::remove_file(root.join("wrong/libone.so")).unwrap();
        let fifo = std::ffi::CString::new(root.join("wrong/libone.so").into_os_string().into_vec()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(ours(&root.join("main"), &[])[0], format!("{}/right/libone.so", root.display()));
    }

    #[test]
    fn another_root_without_a_cache_is_searched_through_its_ld_so_conf() {
        // A root of its own, as a container's: no ld.so.cache, an ld.so.conf including a
        // directory of its own, and the loader behind an absolute link (which must resolve
        // inside the root, not in memtrace's).
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["opt/lib", "lib/x86_64-linux-gnu", "lib64", "etc/ld.so.conf.d", "src"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("src/foo.c"), "int foo(void) { return 0; }\n").unwrap();
        std::fs::write(root.join("src/main.c"), "int foo(void); int main(void) { return foo(); }\n").unwrap();
        cc(root, &["-shared", "-fPIC", "-o", "opt/lib/libfoo.so", "src/foo.c"]);
        cc(root, &["-o", "prog", "src/main.c", "-Lopt/lib", "-lfoo"]);
        std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", root.join("lib/x86_64-linux-gnu/libc.so.6")).unwrap();
        let loader = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
        std::fs::copy(&loader, root.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::fs::write(root.join("etc/ld.so.conf"), "# the usual\ninclude /etc/ld.so.conf.d/*.conf\n").unwrap();
        std::fs::write(root.join("etc/ld.so.conf.d/foo.conf"), "/opt/lib\n").unwrap();
        let target = Target {
            root: root.to_path_buf(),
            program: root.join("prog"),
            program_path: Some(b"/prog".to_vec()),
            cwd: Some(b"/".to_vec()),
            env: Vec::new(),
            secure: false,
        };
        let libraries = load_order(&target).unwrap();
        let names: Vec<String> = libraries.iter().map(|library| library.name.display().to_string()).collect();
        assert_eq!(names, ["/opt/lib/libfoo.so", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]);
        // Each found inside the root: memtrace's paths lead to the root's files.
        assert_eq!(libraries[0].path, root.join("opt/lib/libfoo.so"));
        assert_eq!(libraries[1].path, root.join("lib/x86_64-linux-gnu/libc.so.6"));
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        assert_eq!(inode(&libraries[2].path), inode(&root.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")));
        assert_ne!(inode(&libraries[2].path), inode(&loader));
        // Without the configuration, libfoo is not found; the rest still is.
        std::fs::remove_file(root.join("etc/ld.so.conf")).unwrap();
        let names: Vec<String> =
            load_order(&target).unwrap().iter().map(|library| library.name.display().to_string()).collect();
        assert_eq!(names, ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    }

    #[test]
    fn crafted_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crafted");
        // A huge program-header count, a dynamic section past the end, a string table that never
        // ends: each is an error or a skip, never a hang or a huge read.
        let mut header = vec![0u8; 64];
        header[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        header[16] = 2;
        header[18] = 62;
        header[32..40].copy_from_slice(&64u64.to_le_bytes());
        header[54..56].copy_from_slice(&56u16.to_le_bytes());
        header[56..58].copy_from_slice(&0xfffeu16.to_le_bytes());
        std::fs::write(&file, &header).unwrap();
        let error = Elf::read(&File::open(&file).unwrap()).unwrap_err();
        assert_eq!(error, "65534 program headers, more than the 1024 memtrace reads");
        header[56..58].copy_from_slice(&2u16.to_le_bytes());
        // PT_INTERP whose string runs past the end of the file, PT_DYNAMIC of 2^62 bytes.
        let mut interp = vec![0u8; 56];
        interp[..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        interp[8..16].copy_from_slice(&176u64.to_le_bytes());
        interp[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut dynamic = vec![0u8; 56];
        dynamic[..4].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
        dynamic[32..40].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let mut bytes = [header.clone(), interp, dynamic].concat();
        bytes.extend(std::iter::repeat_n(b'x', 8192));
        std::fs::write(&file, &bytes).unwrap();
        let error = Elf::read(&File::open(&file).unwrap()).unwrap_err();
        assert_eq!(error, "a string is too long or unterminated");
        bytes[176 + MAX_STRING - 10] = 0;
        std::fs::write(&file, &bytes).unwrap();
        let error = Elf::read(&File::open(&file).unwrap()).unwrap_err();
        assert_eq!(error, "a dynamic section of 4611686018427387904 bytes, more than memtrace reads");
        // And the search as a whole refuses a program that is not ELF.
        let target = Target {
            root: PathBuf::from("/"),
            program: file.clone(),
            program_path: None,
            cwd: None,
            env: Vec::new(),
            secure: false,
        };
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        assert_eq!(
            load_order(&target).unwrap_err().to_string(),
            format!("{} is not an ELF file memtrace can read: no ELF header", file.display())
        );
    }

    #[test]
    fn dynamic_string_tokens_expand_as_in_glibc() {
        assert_eq!(dynamic_string_token(b"ORIGIN/lib", b"ORIGIN"), Some(6));
        assert_eq!(dynamic_string_token(b"{ORIGIN}lib", b"ORIGIN"), Some(8));
        assert_eq!(dynamic_string_token(b"ORIGINAL", b"ORIGIN"), None);
        assert_eq!(dynamic_string_token(b"LIBS", b"LIB"), None);
        assert!(wildcard_match(b"*.conf", b"libc.conf"));
        assert!(wildcard_match(b"x*y*z", b"xaaybbz"));
        assert!(!wildcard_match(b"*.conf", b"libc.conf~"));
        assert_eq!(join(b"/usr/lib/", b"libc.so.6"), b"/usr/lib/libc.so.6");
        assert_eq!(join(b"/", b"libc.so.6"), b"/libc.so.6");
        assert_eq!(dirname(b"/libc.so.6"), Some(b"/".to_vec()));
    }

    #[test]
    fn the_cache_is_parsed_with_bounds() {
        // The machine's own cache, as the loader reads it.
        let bytes = std::fs::read("/etc/ld.so.cache").unwrap();
        let cache = Cache::parse(bytes.clone()).unwrap();
        let libc = cache.lookup(b"libc.so.6", 0x0303, &x86_64_hwcaps()).expect("libc is in the cache");
        assert!(libc.ends_with(b"/libc.so.6"), "{}", String::from_utf8_lossy(&libc));
        // Truncated anywhere, or with its counts and offsets pushed out of range, it is an error
        // or a cache that finds nothing, never a panic.
        for length in [0, 10, 20, 47, 48, 100, bytes.len() / 2, bytes.len() - 1] {
            let _ = Cache::parse(bytes[..length].to_vec()).map(|cache| cache.lookup(b"libc.so.6", 0x0303, &[]));
        }
        let mut crafted = bytes.clone();
        crafted[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Cache::parse(crafted).err().as_deref(), Some("more entries than the file holds"));
        let mut crafted = bytes.clone();
        crafted[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        for entry in crafted[CACHE_HEADER..].chunks_exact_mut(CACHE_ENTRY).take(50) {
            entry[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            entry[16..24].copy_from_slice(&(HWCAP_EXTENSION | 7).to_le_bytes());
        }
        let cache = Cache::parse(crafted).unwrap();
        let _ = cache.lookup(b"libc.so.6", 0x0303, &x86_64_hwcaps());
    }
}
