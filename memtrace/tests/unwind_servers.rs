//! Stacks through software people run, as Debian ships it (stripped, without frame pointers):
//! nginx serving requests on the loopback, traced with `record -p` on its worker, and CPython
//! running a script under `run`. Their names come from their dynamic symbols: frames of static
//! functions are unnamed (module and offset), but the walk must go through them to `main`.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{chains::*, *};
use serde_json::Value;

const NGINX: &str = "/usr/sbin/nginx";
const PYTHON: &str = "/usr/bin/python3";
/// Requests sent to nginx while it is traced.
const REQUESTS: usize = 200;

/// A process ended when dropped (a test that fails leaves no server behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port on the loopback").local_addr().expect("its address").port()
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP request to 127.0.0.1:`port`, answered in full.
fn request(port: u16, number: usize) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("nginx accepts");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    write!(stream, "GET /page/{number}?query=value HTTP/1.1\r\nHost: localhost\r\nUser-Agent: memtrace-test\r\nConnection: close\r\n\r\n")
        .expect("the request is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("nginx answers");
    answer
}

/// `memtrace record` of `pid` started, once it says it is tracing; its stderr lines keep coming
/// on the receiver.
fn record(pid: u32, report: &Path) -> (Running, mpsc::Receiver<String>) {
    let mut child = memtrace()
        .args(["record", "-p", &pid.to_string(), "--format", "json", "-o"])
        .arg(report)
        .stderr(Stdio::piped())
        .spawn()
        .expect("memtrace starts");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("memtrace says it is tracing");
        if line.starts_with("memtrace: tracing") {
            return (running, lines);
        }
    }
}

/// Every heap stack of the report, outstanding and released.
fn all_heap_stacks(report: &Value) -> Vec<&Value> {
    ["stacks", "released_stacks"]
        .iter()
        .flat_map(|list| report[*list].as_array().into_iter().flatten())
        .filter(|stack| stack["kind"] == "heap")
        .collect()
}

#[test]
fn nginx_requests_are_walked_from_its_allocator_through_request_handling_to_main() {
    let _serial = serial();
    let prefix = tempfile::tempdir().expect("nginx's prefix");
    let port = free_port();
    let dir = prefix.path().display();
    // Its own prefix, temp paths, pid file and logs; one worker; loopback only.
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {dir}/access.log;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{ add_header X-Test memtrace; return 200 \"hello $uri $args\\n\"; }}\n  }}\n}}\n"
    );
    let config_path = prefix.path().join("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    let master = Running(
        Command::new(NGINX)
            .args(["-p", &dir.to_string(), "-e", &format!("{dir}/error.log"), "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts (cargo xtask setup installs nginx)"),
    );
    let master_pid = master.0.id();
    let mut worker = 0;
    wait_until("nginx's worker", Duration::from_secs(60), || {
        worker = children(master_pid).first().copied().unwrap_or(0);
        worker != 0 && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let report_dir = tempfile::tempdir().expect("temp dir");
    let report_path = report_dir.path().join("report.json");
    let (mut memtrace, _stderr) = record(worker, &report_path);
    for number in 0..REQUESTS {
        let answer = request(port, number);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("hello /page/{number} query=value")), "{answer}");
    }
    let interrupt = Command::new("kill").args(["-INT", &memtrace.0.id().to_string()]).status().expect("kill runs");
    assert!(interrupt.success());
    let status = memtrace.0.wait().expect("memtrace ends");
    assert_eq!(status.code(), Some(0));
    drop(master);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("the report")).expect("the report is JSON");
    assert_matches_schema(&report_path);
    assert_eq!(report["target"]["pid"], worker);

    // Stacks through nginx's allocator functions, each walked through unnamed frames (nginx's
    // static functions) to the outermost frame.
    let through_allocator: Vec<&Value> = all_heap_stacks(&report)
        .into_iter()
        .filter(|stack| {
            names(stack).iter().take(3).any(|name| ["ngx_alloc", "ngx_memalign", "ngx_calloc"].contains(&name.as_str()))
        })
        .collect();
    assert!(!through_allocator.is_empty(), "{report:#}");
    let mut request_stacks = 0;
    for stack in &through_allocator {
        let walked = names(stack);
        assert_eq!(stack["truncated"], false, "{stack:#}");
        assert_eq!(walked.last().map(String::as_str), Some("_start"), "{stack:#}");
        assert!(walked.iter().any(|name| name == "main"), "{stack:#}");
        assert!(walked.iter().any(|name| name == "ngx_process_events_and_timers"), "{stack:#}");
        for frame in frames(stack) {
            assert!(frame["module"].is_string(), "{stack:#}");
        }
        if walked.iter().any(|name| name.starts_with("ngx_http_")) {
            request_stacks += 1;
            // posix_memalign's or malloc's caller, nginx's pool, request handling, the
            // event loop, the worker's cycle (static: unnamed), the master, main, libc's
            // start: at least 12 frames.
            assert!(walked.len() >= 12, "{stack:#}");
        }
    }
    // Each request's pool: ngx_create_pool (posix_memalign through ngx_memalign) called by
    // ngx_http_create_request, itself called by request handling's static functions (unnamed).
    let expected = [
        Some("ngx_memalign"),
        Some("ngx_create_pool"),
        None,
        Some("ngx_http_create_request"),
        None,
        None,
        Some("ngx_process_events_and_timers"),
        None,
        Some("ngx_spawn_process"),
        None,
        Some("ngx_master_process_cycle"),
        Some("main"),
        Some("__libc_start_call_main"),
        Some("__libc_start_main_impl"),
        Some("_start"),
    ];
    let request_pool = through_allocator
        .iter()
        .find(|stack| names(stack).iter().any(|name| name == "ngx_http_create_request"))
        .unwrap_or_else(|| panic!("no stack through ngx_http_create_request: {through_allocator:#?}"));
    let walked: Vec<Option<&str>> = frames(request_pool).iter().map(|frame| frame["function"].as_str()).collect();
    // (The unnamed frames: ngx_http_create_request's caller ngx_http_wait_request_handler,
    // ngx_epoll_process_events, ngx_worker_process_cycle, ngx_start_worker_processes, and one
    // inside ngx_create_pool's caller: static functions, which nginx does not export.)
    assert_eq!(
        walked.iter().filter(|name| name.is_some()).collect::<Vec<_>>(),
        expected.iter().filter(|name| name.is_some()).collect::<Vec<_>>(),
        "{request_pool:#}"
    );
    assert_eq!(walked.len(), expected.len(), "{request_pool:#}");
    assert!(request_pool["total_allocations"].as_u64().unwrap() >= REQUESTS as u64, "{request_pool:#}");
    assert!(request_stacks >= 1);
    println!(
        "nginx: {} stacks through its allocator, {request_stacks} through request handling; the request pool's:",
        through_allocator.len()
    );
    for frame in frames(request_pool) {
        println!("  {} {} {}", frame["function"].as_str().unwrap_or("??"), frame["module"], frame["module_offset"]);
    }
    assert_no_probes_left();
}

#[test]
fn cpython_allocations_are_walked_through_the_interpreter_to_main() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("leak.py");
    // 2,000 bytearrays of 3,000 bytes kept in a global list, then an exit that skips the
    // interpreter's finalization: every one of them is outstanding.
    std::fs::write(
        &script,
        "import os\nkept = []\n\ndef grow(count):\n    for _ in range(count):\n        kept.append(bytearray(3000))\n\n\
         grow(2000)\nos._exit(0)\n",
    )
    .expect("the script");
    let (_, report) = memtrace_json_ok(&["run"], &[PYTHON, script.to_str().expect("a UTF-8 path")]);
    let stack = heap_stacks(&report)
        .into_iter()
        .find(|stack| {
            stack["allocations"].as_u64().unwrap_or(0) >= 1900 && stack["bytes"].as_u64().unwrap_or(0) >= 1900 * 3000
        })
        .unwrap_or_else(|| panic!("no stack holding the bytearrays: {:#}", report["stacks"]));
    let walked = names(stack);
    println!("CPython's stack: {walked:?}");
    assert_eq!(stack["truncated"], false, "{stack:#}");
    let position = |function: &str| walked.iter().position(|name| name == function);
    let eval = position("_PyEval_EvalFrameDefault").unwrap_or_else(|| panic!("no _PyEval_EvalFrameDefault: {stack:#}"));
    let main = position("Py_BytesMain").unwrap_or_else(|| panic!("no Py_BytesMain: {stack:#}"));
    assert!(eval < main, "{walked:?}");
    // The allocator's caller (_PyObject_Malloc, static: unnamed in Debian's stripped python),
    // then the bytearray's growth, the call of its type from the interpreter's loop, the
    // script's code object run from the file, and the interpreter's main, whose caller (main, a
    // tail call to Py_BytesMain) leaves no frame.
    let named: Vec<&str> = walked.iter().map(String::as_str).filter(|name| *name != UNNAMED).collect();
    assert_eq!(
        named,
        [
            "PyByteArray_Resize",
            "_PyObject_MakeTpCall",
            "_PyEval_EvalFrameDefault",
            "PyEval_EvalCode",
            "_PyRun_SimpleFileObject",
            "_PyRun_AnyFileObject",
            "Py_RunMain",
            "Py_BytesMain",
            "__libc_start_call_main",
            "__libc_start_main_impl",
            "_start"
        ],
        "{walked:?}"
    );
    assert_eq!(frames(stack)[0]["module"], "/usr/bin/python3.11", "{stack:#}");
    assert_eq!(walked.last().map(String::as_str), Some("_start"), "{walked:?}");
    for frame in frames(stack) {
        assert!(frame["module"].is_string(), "{stack:#}");
    }
    assert_no_probes_left();
}
