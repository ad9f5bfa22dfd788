//! Function chains of stacks, memtrace's (from its JSON report) and valgrind's (from its log),
//! for the tests that compare stacks walked through code built without frame pointers with
//! valgrind's for the same blocks.
use std::{path::Path, process::Command};

use serde_json::Value;

/// One frame's function, `??` when nothing names it.
pub const UNNAMED: &str = "??";

/// The function names of a memtrace stack, innermost first, inlined frames included (as
/// valgrind lists them).
pub fn names(stack: &Value) -> Vec<String> {
    frames(stack).iter().map(|frame| frame["function"].as_str().unwrap_or(UNNAMED).to_owned()).collect()
}

/// The names of a memtrace stack's physical frames only (one per return address: an inlined
/// frame is left out, the function it was inlined into kept).
pub fn physical_names(stack: &Value) -> Vec<String> {
    frames(stack)
        .iter()
        .filter(|frame| frame["inlined"] != true)
        .map(|frame| frame["function"].as_str().unwrap_or(UNNAMED).to_owned())
        .collect()
}

pub fn frames(stack: &Value) -> &Vec<Value> {
    stack["frames"].as_array().expect("frames")
}

/// Up to and including `function` (all of them when it is not there).
pub fn up_to(names: &[String], function: &str) -> Vec<String> {
    let end = names.iter().position(|name| name == function).map_or(names.len(), |index| index + 1);
    names[..end].to_vec()
}

/// Up to and including `main`: where valgrind stops by default.
pub fn up_to_main(names: &[String]) -> Vec<String> {
    up_to(names, "main")
}

/// glibc exports a function under several names at one address (`strdup`, `__strdup`,
/// `__GI___strdup`, `__libc_malloc`, versioned `fopen@@GLIBC_2.2.5`); valgrind prints the public
/// one, memtrace the one its debug info has.
pub fn public_name(name: &str) -> String {
    let name = name.split("@@").next().unwrap_or(name);
    let name = name.trim_start_matches("__GI_").trim_start_matches("__libc_");
    let name = if name == "???" { UNNAMED } else { name };
    name.trim_start_matches('_').to_owned()
}

pub fn public_names(names: &[String]) -> Vec<String> {
    names.iter().map(|name| public_name(name)).collect()
}

/// A chain's names made comparable across the names glibc gives one address: [`public_name`],
/// and each name of a function of libc or the loader replaced by its module and address, from
/// their symbol tables (the dynamic one, and the debug file's from libc6-dbg). valgrind prints
/// the symbol glibc exports (`_IO_file_overflow@@GLIBC_2.2.5`, `fopen@@GLIBC_2.2.5`), memtrace
/// the function's name in the debug info (`_IO_new_file_overflow`, `_IO_new_fopen`).
pub fn canonical_names(names: &[String]) -> Vec<String> {
    let symbols = glibc_symbols();
    names
        .iter()
        .map(|name| {
            let bare = name.split('@').next().unwrap_or(name);
            symbols.get(bare).cloned().unwrap_or_else(|| public_name(name))
        })
        .collect()
}

/// Function symbols of libc and the loader: name (without version) -> "module+0xaddress".
fn glibc_symbols() -> &'static std::collections::HashMap<String, String> {
    static SYMBOLS: std::sync::OnceLock<std::collections::HashMap<String, String>> = std::sync::OnceLock::new();
    SYMBOLS.get_or_init(|| {
        let mut symbols = std::collections::HashMap::new();
        for (module, file) in [("libc", "/lib/x86_64-linux-gnu/libc.so.6"), ("ld.so", "/lib64/ld-linux-x86-64.so.2")] {
            let file = std::fs::canonicalize(file).expect("glibc's file");
            let mut tables = vec![(file.clone(), true)];
            if let Some(debug) = debug_file(&file) {
                tables.push((debug, false));
            }
            for (table, dynamic) in tables {
                let mut nm = Command::new("nm");
                if dynamic {
                    nm.arg("-D");
                }
                let output = nm.arg("--defined-only").arg(&table).output().expect("nm runs (binutils)");
                for line in String::from_utf8_lossy(&output.stdout).lines() {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let [address, kind, name] = fields[..] else { continue };
                    if !["T", "t", "W", "i"].contains(&kind) {
                        continue;
                    }
                    let name = name.split('@').next().unwrap_or(name);
                    symbols
                        .entry(name.to_owned())
                        .or_insert_with(|| format!("{module}+0x{}", address.trim_start_matches('0')));
                }
            }
        }
        symbols
    })
}

/// The separate debug file of `file` under /usr/lib/debug, by build-id.
fn debug_file(file: &Path) -> Option<std::path::PathBuf> {
    let output = Command::new("readelf").arg("-n").arg(file).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text.lines().find_map(|line| line.trim().strip_prefix("Build ID: "))?.trim().to_owned();
    let path = Path::new("/usr/lib/debug/.build-id").join(&id[..2]).join(format!("{}.debug", &id[2..]));
    path.exists().then_some(path)
}

/// Valgrind's leak kinds as memtrace names them.
pub const KINDS: [(&str, &str); 4] = [
    ("definitely lost", "definitely_lost"),
    ("indirectly lost", "indirectly_lost"),
    ("possibly lost", "possibly_lost"),
    ("still reachable", "still_reachable"),
];

/// One loss record of valgrind's leak check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossRecord {
    /// As memtrace names it: `definitely_lost`, ...
    pub kind: String,
    /// The record's own bytes (for a definitely lost record, its direct bytes).
    pub bytes: u64,
    pub blocks: u64,
    /// Function names below the allocator function, innermost first, inlined frames
    /// included.
    pub chain: Vec<String>,
    /// Only the physical frames (the last name listed at each address).
    pub physical: Vec<String>,
    /// The allocator function valgrind's first frame names (`malloc`, `operator new(unsigned
    /// long)`, ...).
    pub allocator: String,
}

/// Options every comparison runs valgrind with: whole chains, every leak kind, and glibc's and
/// libstdc++'s own buffers left as a normal run leaves them.
pub const VALGRIND_OPTIONS: &[&str] = &[
    "--leak-check=full",
    "--show-leak-kinds=all",
    "--num-callers=50",
    "--run-libc-freeres=no",
    "--run-cxx-freeres=no",
    "--default-suppressions=no",
];

/// Runs `command` under valgrind memcheck (with `env` set) and returns the loss records of
/// each process it ran, by pid. Call it holding `serial()`: valgrind runs the program's code
/// through its JIT, which turns the breakpoints of uprobes attached elsewhere into SIGTRAP.
pub fn valgrind_records(command: &[&str], env: &[(&str, &str)]) -> Vec<(u32, Vec<LossRecord>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new("valgrind")
        .args(VALGRIND_OPTIONS)
        .arg(format!("--log-file={}/valgrind.%p", dir.path().display()))
        .args(command)
        .envs(env.iter().copied())
        .output()
        .expect("valgrind runs (cargo xtask setup installs it)");
    assert!(output.status.code().is_some(), "valgrind was killed: {:?}", output.status);
    let mut processes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("valgrind's logs") {
        let path = entry.expect("a log").path();
        let pid = path.extension().and_then(|pid| pid.to_str()?.parse().ok()).unwrap_or(0);
        let text = std::fs::read_to_string(&path).expect("valgrind's log");
        assert!(text.contains("HEAP SUMMARY"), "valgrind's log has no leak check:\n{text}");
        processes.push((pid, parse_loss_records(&text)));
    }
    processes.sort_by_key(|(pid, _)| *pid);
    processes
}

/// Every loss record of one valgrind log.
pub fn parse_loss_records(text: &str) -> Vec<LossRecord> {
    let mut records = Vec::new();
    // The record being read, and the address of its last frame line.
    let mut current: Option<(LossRecord, Vec<(String, String)>)> = None;
    let finish = |current: &mut Option<(LossRecord, Vec<(String, String)>)>, records: &mut Vec<LossRecord>| {
        if let Some((mut record, lines)) = current.take() {
            let Some(((_, allocator), rest)) = lines.split_first() else { return };
            // Inlined frames share the address of the frame they were inlined into, listed
            // last; valgrind's first line is its own allocator function.
            record.allocator = allocator.clone();
            record.chain = rest.iter().map(|(_, name)| name.clone()).collect();
            record.physical = rest
                .iter()
                .enumerate()
                .filter(|(index, (address, _))| rest.get(index + 1).is_none_or(|(next, _)| next != address))
                .map(|(_, (_, name))| name.clone())
                .collect();
            records.push(record);
        }
    };
    for line in text.lines() {
        // "==1== 4,242 bytes in 1 blocks are definitely lost in loss record 1 of 1"
        // "==1== 92 (32 direct, 60 indirect) bytes in 1 blocks are definitely lost in ..."
        let body = line.split_once("== ").map_or(line, |(_, body)| body).trim_start();
        if body.contains(" in loss record ") {
            finish(&mut current, &mut records);
            let kind =
                KINDS.iter().find(|(theirs, _)| body.contains(theirs)).map(|(_, ours)| *ours).expect("a leak kind");
            let number = |text: &str| text.replace(',', "").parse::<u64>().expect("a number");
            let words: Vec<&str> = body.split_whitespace().collect();
            let bytes =
                if words[1].starts_with('(') { number(words[1].trim_start_matches('(')) } else { number(words[0]) };
            let blocks_at = words.iter().position(|word| *word == "blocks").expect("N blocks") - 1;
            let record = LossRecord {
                kind: kind.to_owned(),
                bytes,
                blocks: number(words[blocks_at]),
                chain: Vec::new(),
                physical: Vec::new(),
                allocator: String::new(),
            };
            current = Some((record, Vec::new()));
        } else if let Some((_, lines)) = current.as_mut()
            && let Some(frame) = body.strip_prefix("by ").or_else(|| body.strip_prefix("at "))
        {
            // "0x109181: leaf_alloc (unwind_chain.c:14)", "0x4001: ??? (in /usr/lib/...)"
            let (address, rest) = frame.split_once(": ").unwrap_or((frame, "???"));
            let (function, place) = rest.rsplit_once(" (").unwrap_or((rest, ""));
            // valgrind's own replacement functions after its allocator (posix_memalign calling
            // its memalign): not frames of the program.
            if !lines.is_empty() && place.contains("vgpreload_") {
                continue;
            }
            lines.push((address.to_owned(), function.to_owned()));
        } else if body.is_empty() {
            finish(&mut current, &mut records);
        }
    }
    finish(&mut current, &mut records);
    records
}

/// The heap stack of the report holding exactly `bytes` (of any leak kind).
pub fn heap_stack_of(report: &Value, bytes: u64) -> &Value {
    heap_stacks(report)
        .into_iter()
        .find(|stack| stack["bytes"] == bytes)
        .unwrap_or_else(|| panic!("no heap stack of {bytes} bytes in {:#}", report["stacks"]))
}

pub fn heap_stacks(report: &Value) -> Vec<&Value> {
    report["stacks"].as_array().expect("stacks").iter().filter(|stack| stack["kind"] == "heap").collect()
}

pub fn path(binary: &Path) -> &str {
    binary.to_str().expect("a UTF-8 path")
}
