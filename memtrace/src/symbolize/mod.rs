//! Symbolization: user addresses to function, file, line and module.
//!
//! Kept apart from tracing, as retsnoop keeps its addr2line sidecar: the tracer hands over a
//! process id and addresses, this component answers with frames. A process's executable
//! mappings are snapshotted while it lives, with a handle on every mapped file, so that stacks
//! still symbolize after it exits or its files are deleted. Each module is parsed once.
//! Stripped modules get their names from separate debug files (`debuginfo`), the vdso from
//! memtrace's own copy (`vdso`), JIT code from `/tmp/perf-PID.map` (`jitmap`).
pub(crate) mod debuginfo;
pub mod jitmap;
pub mod module;
mod vdso;

use std::{collections::HashMap, fs::File, io, path::PathBuf, rc::Rc};

pub use debuginfo::DEFAULT_DEBUG_DIR;
use jitmap::JitMap;
use module::Module;
pub use module::SourceFrame;

use crate::target::maps::{self, Mapping};

/// One frame of a symbolized stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The address as captured (a return address for all but signal frames).
    pub address: u64,
    /// Demangled function name; `None` when nothing names it.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the mapped object, or `[vdso]` and the like; `None` when unmapped.
    pub module: Option<String>,
    /// Offset of the address in the module's file, so an unnamed frame can still be found.
    pub module_offset: Option<u64>,
    /// This frame was inlined into the next one (same address).
    pub inlined: bool,
}

/// Identity of a mapped file: its inode and its path (two files may share an inode number on
/// different devices, never also the path).
type ModuleId = (u64, String);

struct ModuleFile {
    id: ModuleId,
    file: File,
}

struct ImageMapping {
    mapping: Mapping,
    module: Option<Rc<ModuleFile>>,
}

pub struct Symbolizer {
    images: HashMap<u32, Vec<ImageMapping>>,
    modules: HashMap<ModuleId, Option<Module>>,
    cache: HashMap<(ModuleId, u64), Vec<SourceFrame>>,
    /// Where separate debug files are looked for.
    debug_dirs: Vec<PathBuf>,
    /// JIT functions per process, from its perf map.
    jit: HashMap<u32, JitMap>,
    /// Processes whose perf map was skipped (and said so).
    jit_skipped: std::collections::HashSet<u32>,
    /// memtrace's own vdso image, copied once when a process's vdso is first seen.
    vdso: Option<Option<Rc<ModuleFile>>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::with_debug_dirs(vec![PathBuf::from(DEFAULT_DEBUG_DIR)])
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A symbolizer looking for separate debug files under `debug_dirs`.
    pub fn with_debug_dirs(debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            images: HashMap::new(),
            modules: HashMap::new(),
            cache: HashMap::new(),
            debug_dirs,
            jit: HashMap::new(),
            jit_skipped: std::collections::HashSet::new(),
            vdso: None,
        }
    }

    fn vdso_module(&mut self) -> Option<Rc<ModuleFile>> {
        self.vdso
            .get_or_insert_with(|| {
                vdso::own_image()
                    .map(|file| Rc::new(ModuleFile { id: (0, vdso::VDSO.to_owned()), file }))
                    .map_err(|error| log::warn!("cannot copy the vdso: {error}"))
                    .ok()
            })
            .clone()
    }

    /// Records the executable mappings of a live process and opens the files behind them.
    /// Call it while the process exists; later calls replace the earlier snapshot.
    pub fn snapshot(&mut self, pid: u32) -> io::Result<()> {
        let maps = maps::read(pid)?;
        let mut opened: HashMap<ModuleId, Rc<ModuleFile>> = HashMap::new();
        let mut image = Vec::new();
        for mapping in maps.into_iter().filter(|mapping| mapping.executable) {
            let module = match (&mapping.path, mapping.is_file()) {
                (Some(path), true) => {
                    let id = (mapping.inode, path.clone());
                    match opened.get(&id) {
                        Some(module) => Some(module.clone()),
                        None => open_mapped_file(pid, &mapping).map(|file| {
                            let module = Rc::new(ModuleFile { id: id.clone(), file });
                            opened.insert(id, module.clone());
                            module
                        }),
                    }
                }
                (Some(path), false) if path == vdso::VDSO => self.vdso_module(),
                _ => None,
            };
            image.push(ImageMapping { mapping, module });
        }
        self.images.insert(pid, image);
        // A JIT's map is read while the process lives: some delete it when they exit.
        match JitMap::read(pid) {
            Ok(Some(map)) => {
                self.jit.insert(pid, map);
            }
            Ok(None) => {}
            // Said once per process (its mappings may be read more than once).
            Err(reason) if self.jit_skipped.insert(pid) => {
                eprintln!("memtrace: warning: skipping /tmp/perf-{pid}.map: {reason}; its JIT frames stay unnamed")
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Forgets an exited process's mappings and JIT map.
    pub fn forget(&mut self, pid: u32) {
        self.images.remove(&pid);
        self.jit.remove(&pid);
        self.jit_skipped.remove(&pid);
    }

    /// The GNU build ID (hex) of the module that process `pid` maps from `module_path`, once a
    /// frame in it was symbolized (the module is parsed then).
    pub fn build_id(&self, pid: u32, module_path: &str) -> Option<String> {
        let image = self.images.get(&pid)?;
        let entry = image.iter().find(|entry| entry.mapping.path.as_deref() == Some(module_path))?;
        let module = self.modules.get(&entry.module.as_ref()?.id)?.as_ref()?;
        module.build_id().map(debuginfo::hex)
    }

    /// Whether a snapshot of `pid` was taken.
    pub fn knows(&self, pid: u32) -> bool {
        self.images.contains_key(&pid)
    }

    /// Symbolizes a user stack of `pid`, innermost address first.
    pub fn symbolize(&mut self, pid: u32, addresses: &[u64]) -> Vec<Frame> {
        addresses.iter().flat_map(|&address| self.symbolize_address(pid, address)).collect()
    }

    fn symbolize_address(&mut self, pid: u32, address: u64) -> Vec<Frame> {
        let unknown = Frame {
            address,
            function: None,
            file: None,
            line: None,
            module: None,
            module_offset: None,
            inlined: false,
        };
        let found = self.images.get(&pid).and_then(|image| image.iter().find(|entry| entry.mapping.contains(address)));
        // JIT code lives in anonymous executable memory, named only by the JIT's perf map.
        if found.is_none_or(|found| found.module.is_none())
            && let Some(name) = self.jit.get(&pid).and_then(|map| map.name_of(address))
        {
            return vec![Frame {
                function: Some(name.to_owned()),
                module: Some(format!("/tmp/perf-{pid}.map")),
                ..unknown
            }];
        }
        let Some(found) = found else {
            return vec![unknown];
        };
        let module_offset = address - found.mapping.start + found.mapping.offset;
        let located = Frame { module: found.mapping.path.clone(), module_offset: Some(module_offset), ..unknown };
        let Some(module_file) = found.module.clone() else {
            return vec![located];
        };
        // A return address points after the call: look up the byte before it, which is inside
        // the call instruction and so on the right line and inline chain.
        let key = (module_file.id.clone(), module_offset.saturating_sub(1));
        if !self.cache.contains_key(&key) {
            let debug_dirs = &self.debug_dirs;
            let module = self.modules.entry(module_file.id.clone()).or_insert_with(|| {
                Module::open(&module_file.file, &module_file.id.1, debug_dirs)
                    .map_err(|error| log::warn!("cannot read {}: {error}", module_file.id.1))
                    .ok()
            });
            let frames =
                module.as_ref().and_then(|module| Some(module.frames(module.address_of(key.1)?))).unwrap_or_default();
            self.cache.insert(key.clone(), frames);
        }
        let source = &self.cache[&key];
        if source.is_empty() {
            return vec![located];
        }
        let last = source.len() - 1;
        source
            .iter()
            .enumerate()
            .map(|(index, frame)| Frame {
                function: frame.function.clone(),
                file: frame.file.clone(),
                line: frame.line,
                inlined: index < last,
                ..located.clone()
            })
            .collect()
    }
}

/// Opens the file behind a mapping: through `map_files` (works for deleted files and other
/// mount namespaces), else through the process's root, else by its path.
fn open_mapped_file(pid: u32, mapping: &Mapping) -> Option<File> {
    let path = mapping.path.as_deref()?;
    File::open(mapping.map_file(pid))
        .or_else(|_| File::open(format!("/proc/{pid}/root{path}")))
        .or_else(|_| File::open(path))
        .map_err(|error| log::warn!("cannot open {path} of process {pid}: {error}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_known_function() -> u64 {
        // The address of a point inside this function, as a return address would be.
        let pointer = a_known_function as fn() -> u64 as usize as u64;
        std::hint::black_box(pointer) + 1
    }

    #[test]
    fn names_a_function_of_this_test_binary() {
        let mut symbolizer = Symbolizer::new();
        symbolizer.snapshot(std::process::id()).expect("own maps");
        let frames = symbolizer.symbolize(std::process::id(), &[a_known_function()]);
        let outer = frames.last().expect("one frame at least");
        let name = outer.function.as_deref().unwrap_or_default();
        assert!(name.ends_with("a_known_function"), "{frames:?}");
        assert!(outer.module.as_deref().unwrap_or_default().contains("memtrace"), "{frames:?}");
        assert_eq!(outer.file.as_deref().map(|f| f.ends_with("symbolize/mod.rs")), Some(true), "{frames:?}");
    }

    #[test]
    fn unmapped_addresses_stay_as_bare_frames() {
        let mut symbolizer = Symbolizer::new();
        symbolizer.snapshot(std::process::id()).expect("own maps");
        let frames = symbolizer.symbolize(std::process::id(), &[0x10]);
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].address, frames[0].module.as_deref()), (0x10, None));
    }

    #[test]
    fn vdso_frames_are_named() {
        let maps = maps::read(std::process::id()).expect("own maps");
        let vdso = maps.iter().find(|mapping| mapping.path.as_deref() == Some(vdso::VDSO)).expect("a vdso");
        // Where clock_gettime is, read from the vdso's dynamic symbols here, independently.
        let mut image = vec![0u8; (vdso.end - vdso.start) as usize];
        use std::io::{Read, Seek, SeekFrom};
        let mut memory = File::open("/proc/self/mem").unwrap();
        memory.seek(SeekFrom::Start(vdso.start)).unwrap();
        memory.read_exact(&mut image).unwrap();
        let elf = object::File::parse(&*image).expect("the vdso is an ELF image");
        let offset = object::Object::dynamic_symbols(&elf)
            .find(|symbol| object::ObjectSymbol::name(symbol) == Ok("__vdso_clock_gettime"))
            .map(|symbol| object::ObjectSymbol::address(&symbol))
            .expect("the vdso has clock_gettime");

        let mut symbolizer = Symbolizer::new();
        symbolizer.snapshot(std::process::id()).expect("own maps");
        let frames = symbolizer.symbolize(std::process::id(), &[vdso.start + offset + 4]);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].function.as_deref().is_some_and(|name| name.ends_with("clock_gettime")), "{frames:?}");
        assert_eq!(frames[0].module.as_deref(), Some(vdso::VDSO));
    }

    /// Symbolizes 10,000 distinct stacks of 12 frames drawn from 2,000 return addresses in
    /// this test binary's functions (a large program's worth), with a cold symbolizer, and
    /// prints the time: `cargo test -p memtrace --lib symbolizes_10000 -- --nocapture`.
    #[test]
    fn symbolizes_10000_distinct_stacks() {
        let maps = maps::read(std::process::id()).expect("own maps");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let text = maps
            .iter()
            .find(|mapping| mapping.executable && mapping.path.as_deref() == exe.to_str())
            .expect("the test binary's code is mapped");
        // Addresses spread over the whole code mapping, so that many functions and compile
        // units are looked up.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pool: Vec<u64> = (0..2000).map(|_| text.start + next() % (text.end - text.start)).collect();
        let stacks: Vec<Vec<u64>> =
            (0..10_000).map(|_| (0..12).map(|_| pool[(next() % pool.len() as u64) as usize]).collect()).collect();
        let distinct: std::collections::HashSet<&Vec<u64>> = stacks.iter().collect();
        assert_eq!(distinct.len(), 10_000);

        let started = std::time::Instant::now();
        let mut symbolizer = Symbolizer::new();
        symbolizer.snapshot(std::process::id()).expect("own maps");
        let mut named = 0usize;
        for stack in &stacks {
            named +=
                symbolizer.symbolize(std::process::id(), stack).iter().filter(|frame| frame.function.is_some()).count();
        }
        let elapsed = started.elapsed();
        println!(
            "symbolized 10,000 distinct stacks (120,000 frames, 2,000 distinct addresses, {named} named frames incl. inlined) in {:.3} s",
            elapsed.as_secs_f64()
        );
        assert!(named >= 120_000 * 9 / 10, "only {named} frames named");
        assert!(elapsed.as_secs() < 20, "symbolizing took {elapsed:?}");
    }
}
