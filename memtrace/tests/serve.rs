//! `memtrace serve` against the real consumers: `go tool pprof` on its /debug/pprof/heap,
//! Debian's Prometheus scraping its /metrics, promtool on the example alert rules; and its
//! selectors following processes that start, exit, or move into a cgroup. Everything listens on
//! the loopback and every wait is bounded.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use common::{RawSample, assert_no_probes_left, go_pprof_samples, line_of, memtrace, serial};
use serde_json::Value;

/// The test service (tests/programs/serve_service.c), built optimized, without frame pointers,
/// as services are.
fn service_binary(name: &str) -> PathBuf {
    common::build_variant("serve_service.c", name, "cc", &["-O2", "-g"], &[])
}

/// A running test service that allocates on command.
struct Service {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Service {
    fn start(binary: &Path) -> Self {
        let mut child =
            Command::new(binary).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("the test service starts");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the service prints its pid");
        let pid = line.trim().parse().expect("a pid");
        Self { child, stdin, stdout, pid }
    }

    /// Sends one command and waits for its "done".
    fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{command}").expect("the service reads its commands");
        stdin.flush().expect("flushed");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the service answers");
        assert_eq!(line.trim(), "done", "the service's answer to {command:?}");
    }

    /// Closes its input: it exits with 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("the service is waited for");
        assert!(status.success(), "the service's own exit: {status}");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `memtrace serve`, with the address it listens on.
struct Server {
    child: Child,
    address: String,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = memtrace()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("memtrace serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut line = String::new();
        let address = loop {
            line.clear();
            let read = stderr.read_line(&mut line).expect("memtrace's stderr");
            assert!(read > 0, "memtrace serve ended before serving: {:?}", child.wait());
            if let Some(rest) = line.strip_prefix("memtrace: serving http://") {
                break rest.split('/').next().expect("an address").to_owned();
            }
        };
        Self { child, address, stderr }
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(&self.address, path, None)
    }

    fn text(&self, path: &str) -> String {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        String::from_utf8(body).expect("text")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGTERM: memtrace must exit with 0 and leave no probe behind.
    fn stop(mut self) -> String {
        // SAFETY: kill with a pid we own and a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("memtrace is waited for");
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        assert!(status.success(), "memtrace serve on SIGTERM: {status}; {rest}");
        assert_no_probes_left();
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET; the status and the body.
fn http_get(address: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).expect("memtrace serve accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("a timeout");
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n")
        .expect("the request is sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("the response is read");
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").expect("headers end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, response[split + 4..].to_vec())
}

/// Polls `check` every 100 ms for at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the series `name{labels...}` whose labels include every one of `labels`.
fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
        (series_name == name && labels.iter().all(|(key, value)| rest.contains(&format!("{key}=\"{value}\""))))
            .then(|| value.parse().ok())?
    })
}

#[test]
fn heap_profile_matches_the_json_report_and_a_delta_holds_only_its_seconds() {
    let _serial = serial();
    let binary = service_binary("serve_service");
    let mut service = Service::start(&binary);
    let pid = service.pid.to_string();
    let server = Server::start(&["-p", &pid, "--exact"]);
    service.command("leak 10 1000");
    service.command("churn 50 64");

    // What go tool pprof reads from the endpoint equals the JSON report of the same moment: the
    // service is idle between the two requests.
    let report_text = server.text(&format!("/debug/memtrace/report.json?pid={pid}"));
    let saved = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(saved.path(), &report_text).unwrap();
    common::assert_matches_schema(saved.path());
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(report["mode"], "serve");
    let samples = go_pprof_samples(Path::new(&server.url(&format!("/debug/pprof/heap?pid={pid}"))), &[]);
    let stacks: Vec<&Value> =
        report["stacks"].as_array().unwrap().iter().chain(report["released_stacks"].as_array().unwrap()).collect();
    let json_sums = ["total_allocations", "total_allocated_bytes", "allocations", "bytes"]
        .map(|field| stacks.iter().map(|stack| stack[field].as_u64().unwrap()).sum::<u64>());
    let pprof_sums: Vec<u64> = (0..4).map(|index| samples.iter().map(|sample| sample.values[index]).sum()).collect();
    assert_eq!(
        pprof_sums,
        json_sums.to_vec(),
        "pprof's alloc_objects, alloc_space, inuse_objects, inuse_space against the JSON"
    );
    // The leak: 10 blocks of 1,000 bytes, all held; the churn: 50 of 64, none held.
    assert!(samples.contains(&RawSample { values: vec![10, 10_000, 10, 10_000], labels: labels(&pid) }), "{samples:?}");
    assert!(samples.contains(&RawSample { values: vec![50, 3_200, 0, 0], labels: labels(&pid) }), "{samples:?}");
    assert!(samples.iter().all(|sample| sample.labels["pid"] == pid));

    // The executable is the profile's first mapping, with its build ID, as in Go's profiles.
    let first_mapping = pprof_first_mapping(&server.url(&format!("/debug/pprof/heap?pid={pid}")));
    let build_id = build_id_of(&binary);
    assert!(
        first_mapping.contains(&format!("{} {build_id}", binary.display())),
        "first mapping {first_mapping:?}, expected {} with build ID {build_id}",
        binary.display()
    );

    // ?seconds=3: a delta over the next 3 s, which holds the 7 blocks of 300 bytes leaked in them
    // and nothing from before.
    let delta_url = server.url(&format!("/debug/pprof/heap?pid={pid}"));
    let delta = std::thread::spawn(move || go_pprof_samples(Path::new(&delta_url), &["-seconds", "3"]));
    std::thread::sleep(Duration::from_millis(1000));
    service.command("leak 7 300");
    let delta = delta.join().expect("the delta request");
    assert!(delta.contains(&RawSample { values: vec![7, 2_100, 7, 2_100], labels: labels(&pid) }), "{delta:?}");
    assert!(!delta.iter().any(|sample| sample.values[1] == 10_000 || sample.values[1] == 3_200), "{delta:?}");

    // The page lists the process with links to its profiles; bad parameters get a 400.
    let page = server.text("/");
    assert!(page.contains(&format!("/debug/pprof/heap?pid={pid}")), "{page}");
    assert_eq!(server.get("/debug/pprof/heap?seconds=0").0, 400);
    assert_eq!(server.get("/debug/pprof/heap?pid=x").0, 400);
    let svg = server.text(&format!("/debug/memtrace/flamegraph.svg?pid={pid}"));
    assert!(svg.contains("leak_request"), "the flamegraph names the leaking function");

    server.stop();
    // The service never noticed: it goes on and exits with 0.
    service.command("leak 1 10");
    service.finish();
}

/// The first line of `go tool pprof -raw`'s mappings: `1: start/limit/offset PATH BUILD_ID [FN]...`.
fn pprof_first_mapping(url: &str) -> String {
    common::go_pprof_raw(Path::new(url), &[])
        .lines()
        .skip_while(|line| *line != "Mappings")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// The GNU build ID of an ELF file, as `readelf -n` prints it.
fn build_id_of(binary: &Path) -> String {
    let output = Command::new("readelf").arg("-n").arg(binary).output().expect("readelf runs (binutils)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .expect("the test service has a build ID")
        .to_owned()
}

fn labels(pid: &str) -> std::collections::BTreeMap<String, String> {
    [("kind", "heap"), ("suppressed", "false"), ("pid", pid)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn metrics_count_exactly_and_mark_a_growing_stack_as_a_suspect() {
    let _serial = serial();
    let binary = service_binary("serve_service");
    let mut service = Service::start(&binary);
    let pid = service.pid.to_string();
    let server = Server::start(&["-p", &pid, "--exact", "--growth-interval", "300ms", "--growth-window", "4"]);
    let process = [("pid", pid.as_str()), ("exe", "serve_service")];
    for round in 1..=8u64 {
        service.command("leak 5 1000");
        std::thread::sleep(Duration::from_millis(350));
        let metrics = server.text("/metrics");
        // 5,000 bytes a round, and the global list's realloc'd array of 8 bytes per block.
        let blocks = 5 * round;
        assert_eq!(metric(&metrics, "memtrace_outstanding_bytes", &process), Some((1000 * blocks + 8 * blocks) as f64));
        assert_eq!(metric(&metrics, "memtrace_outstanding_blocks", &process), Some((blocks + 1) as f64));
    }
    let metrics = server.text("/metrics");
    let leak_line = line_of("serve_service", "void *block = malloc(size);").to_string();
    let location = format!("{}:{leak_line}", common::source_path("serve_service.c"));
    let stack = [("pid", pid.as_str()), ("function", "leak_request"), ("location", location.as_str())];
    assert_eq!(metric(&metrics, "memtrace_stack_outstanding_bytes", &stack), Some(40_000.0), "{metrics}");
    assert_eq!(metric(&metrics, "memtrace_leak_suspect", &stack), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "memtrace_lost_events_total", &[("reason", "ring_buffer_full")]), Some(0.0));
    assert!(metric(&metrics, "memtrace_rss_bytes", &process).is_some_and(|rss| rss > 0.0));
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    server.stop();
    service.finish();
}

#[test]
fn exe_selector_catches_a_process_started_later_and_forgets_it_after_its_exit() {
    let _serial = serial();
    let binary = service_binary("serve_exe_service");
    let server = Server::start(&["--exe", "*/serve_exe_service", "--exact"]);
    let mut service = Service::start(&binary);
    let pid = service.pid.to_string();
    let process = [("pid", pid.as_str())];
    eventually(Duration::from_secs(10), "the new process is traced", || {
        metric(&server.text("/metrics"), "memtrace_outstanding_bytes", &process).is_some()
    });
    service.command("leak 3 500");
    let metrics = server.text("/metrics");
    assert_eq!(metric(&metrics, "memtrace_outstanding_bytes", &process), Some(1_500.0 + 24.0), "{metrics}");
    service.finish();
    // Reported once more after its exit (no longer counted as traced), then forgotten.
    let mut last = String::new();
    eventually(Duration::from_secs(10), "the exit is seen", || {
        last = server.text("/metrics");
        metric(&last, "memtrace_processes", &[]) == Some(0.0)
    });
    assert_eq!(metric(&last, "memtrace_outstanding_bytes", &process), Some(1_524.0), "{last}");
    let after = server.text("/metrics");
    assert_eq!(metric(&after, "memtrace_outstanding_bytes", &process), None, "{after}");
    server.stop();
}

/// A cgroup directory of its own, in the memory hierarchy (cgroup v1) or the unified one (v2).
struct Cgroup(PathBuf);

impl Cgroup {
    fn create() -> Self {
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        let path = root.join(format!("memtrace-serve-test-{}", std::process::id()));
        std::fs::create_dir(&path).expect("a cgroup is created (the tests run as root)");
        Self(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn cgroup_selector_covers_a_process_moved_into_the_cgroup() {
    let _serial = serial();
    let binary = service_binary("serve_cgroup_service");
    let cgroup = Cgroup::create();
    let mut outside = Service::start(&binary);
    let server = Server::start(&["--cgroup", cgroup.0.to_str().unwrap(), "--exact"]);
    let mut moved = Service::start(&binary);
    let moved_pid = moved.pid.to_string();
    std::fs::write(cgroup.0.join("cgroup.procs"), &moved_pid).expect("the process is moved into the cgroup");
    eventually(Duration::from_secs(10), "the moved process is traced", || {
        metric(&server.text("/metrics"), "memtrace_outstanding_bytes", &[("pid", &moved_pid)]).is_some()
    });
    moved.command("leak 2 700");
    outside.command("leak 2 700");
    let metrics = server.text("/metrics");
    assert_eq!(metric(&metrics, "memtrace_outstanding_bytes", &[("pid", &moved_pid)]), Some(1_400.0 + 16.0));
    let outside_pid = outside.pid.to_string();
    assert_eq!(metric(&metrics, "memtrace_outstanding_bytes", &[("pid", &outside_pid)]), None, "{metrics}");
    server.stop();
    moved.finish();
    outside.finish();
}

#[test]
fn serve_refuses_remote_addresses_and_checks_its_token() {
    let _serial = serial();
    let output = memtrace().args(["serve", "-p", "1", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address") && stderr.contains("--allow-remote"), "{stderr}");

    let binary = service_binary("serve_service");
    let service = Service::start(&binary);
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "s3cret-token\n").unwrap();
    let pid = service.pid.to_string();
    let server = Server::start(&["-p", &pid, "--token-file", token_file.path().to_str().unwrap()]);
    assert_eq!(http_get(&server.address, "/metrics", None).0, 401);
    assert_eq!(http_get(&server.address, "/metrics", Some("wrong")).0, 401);
    let (status, body) = http_get(&server.address, "/metrics", Some("s3cret-token"));
    assert_eq!(status, 200);
    // Sampled by default: the numbers are marked as estimates.
    assert_eq!(metric(&String::from_utf8(body).unwrap(), "memtrace_estimated", &[]), Some(1.0));
    server.stop();
    service.finish();
}

#[test]
fn prometheus_scrapes_the_growing_leak_and_promtool_fires_the_example_alerts() {
    let _serial = serial();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy");
    promtool_test_rules(&docs.join("alerts.test.yml"));

    let binary = service_binary("serve_service");
    let mut service = Service::start(&binary);
    let pid = service.pid.to_string();
    let server = Server::start(&["-p", &pid, "--exact"]);
    let scratch = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = scratch.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: memtrace\n    static_configs:\n      - targets: ['{}']\n",
            server.address
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", scratch.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus starts");
    let prometheus_address = format!("127.0.0.1:{port}");
    let query = format!("/api/v1/query?query=memtrace_outstanding_bytes%7Bpid%3D%22{pid}%22%7D%5B60s%5D");
    let mut values: Vec<f64> = Vec::new();
    let started = Instant::now();
    // Leak 1,000 bytes every half second until Prometheus holds a growing series of them.
    while started.elapsed() < Duration::from_secs(90) {
        service.command("leak 1 1000");
        std::thread::sleep(Duration::from_millis(500));
        let Ok(stream) = TcpStream::connect(&prometheus_address) else { continue };
        drop(stream);
        let (status, body) = http_get(&prometheus_address, &query, None);
        if status != 200 {
            continue;
        }
        let answer: Value = serde_json::from_slice(&body).unwrap();
        values = answer["data"]["result"][0]["values"]
            .as_array()
            .map(|points| points.iter().filter_map(|point| point[1].as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        values.dedup();
        if values.len() >= RECORDED {
            break;
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        values.len() >= RECORDED,
        "Prometheus scraped {RECORDED} values of memtrace_outstanding_bytes for pid {pid}: {values:?}"
    );
    assert!(values.windows(2).all(|pair| pair[1] > pair[0]), "growing: {values:?}");
    // Each value is whole blocks of 1,000 bytes and their 8-byte list entries.
    assert!(values.iter().all(|value| value % 1008.0 == 0.0), "{values:?}");
    server.stop();
    service.finish();

    // The recorded series, replayed half an hour apart, fires the example growth alert after six
    // hours, and not before.
    let recorded: Vec<String> = values.iter().take(RECORDED).map(|value| format!("{value}")).collect();
    let replay = scratch.path().join("recorded.test.yml");
    std::fs::write(
        &replay,
        format!(
            r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 30m
    input_series:
      - series: 'memtrace_outstanding_bytes{{pid="{pid}",exe="serve_service"}}'
        values: '{values}'
    promql_expr_test:
      - expr: count(ALERTS{{alertname="MemtraceOutstandingGrowing", alertstate="firing"}}) or vector(0)
        eval_time: 6h
        exp_samples:
          - value: 0
      - expr: ALERTS{{alertname="MemtraceOutstandingGrowing", alertstate="firing"}}
        eval_time: 6h40m
        exp_samples:
          - labels: 'ALERTS{{alertname="MemtraceOutstandingGrowing", alertstate="firing", pid="{pid}", exe="serve_service", severity="warning"}}'
            value: 1
"#,
            rules = docs.join("alerts.yml").display(),
            values = recorded.join(" "),
        ),
    )
    .unwrap();
    promtool_test_rules(&replay);
}

/// `promtool test rules FILE` must pass.
fn promtool_test_rules(file: &Path) {
    let promtool = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(file)
        .output()
        .expect("promtool runs (cargo xtask setup installs prometheus)");
    assert!(
        promtool.status.success(),
        "promtool test rules {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
}

/// Distinct values of the growing series the Prometheus test waits for: 14 half-hour steps
/// cover the growth alert's six hours and its first hour's window.
const RECORDED: usize = 14;
