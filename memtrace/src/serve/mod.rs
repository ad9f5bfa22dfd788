//! `memtrace serve`'s HTTP side: the endpoints that Prometheus, pprof, Parca and Pyroscope
//! scrape, and a page for people. It holds no trace state: each request asks the session for a
//! [`Snapshot`] (the report of this moment) and renders it.
//!
//! - `/metrics`: Prometheus' text exposition (OpenMetrics), see `metrics`.
//! - `/debug/pprof/heap`, `/debug/pprof/allocs`: gzipped profile.proto as Go's runtime serves
//!   them, `?pid=`, `?exe=`, `?seconds=N` (see `profile`).
//! - `/debug/memtrace/report.json`, `/debug/memtrace/flamegraph.svg`: the JSON report and the
//!   flamegraph, `?pid=`, `?exe=`.
//! - `/`: the traced processes, with links to the above (see `page`).
mod metrics;
mod page;
mod profile;
mod selection;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
pub use selection::Selection;
use tokio::sync::{mpsc, oneshot};

use crate::report::{Report, options::Weight};

/// The longest delta profile (`?seconds=`) served: a request holds a connection that long.
pub const MAX_DELTA_SECONDS: u64 = 3600;

/// The report of one moment, with what the formats need beyond it.
pub struct Snapshot {
    pub report: Report,
    /// When it was taken, in ns since the Unix epoch (pprof's `time_nanos`).
    pub taken_unix_ns: i64,
    /// Each module's GNU build ID (hex), by the path the report names it with.
    pub build_ids: std::collections::HashMap<String, String>,
    /// Bytes between samples (`--sample-bytes`), 1 when every block is recorded: pprof's
    /// `period`.
    pub sample_period: u64,
    /// `--metrics-stacks`: stacks per process in `memtrace_stack_outstanding_bytes`.
    pub metrics_stacks: usize,
    /// Each process's executable, as /proc/PID/exe names it (a process may rewrite its command
    /// line, as nginx's workers do).
    pub executables: std::collections::HashMap<u32, String>,
}

impl Snapshot {
    /// The executable of process `pid`: its /proc/PID/exe, or the first word of its command.
    pub fn executable(&self, pid: u32) -> &str {
        self.executables.get(&pid).map(String::as_str).unwrap_or_else(|| {
            let process = self.report.processes.iter().find(|process| process.pid == pid);
            process.and_then(|process| process.command.first()).map_or("", String::as_str)
        })
    }
}

/// What the HTTP side asks the session for.
pub enum Ask {
    /// The report of this moment; `pictures`: with each process's memory picture (smaps, the
    /// cgroup), which `/metrics` shows and the profiles do not need.
    Snapshot { pictures: bool, reply: oneshot::Sender<Arc<Snapshot>> },
}

/// How the server is reached.
pub struct Listen {
    pub address: SocketAddr,
    /// A token every request must carry (`Authorization: Bearer TOKEN`), when set.
    pub token: Option<String>,
}

/// Refuses a non-loopback address without `allow_remote`: stacks and command lines tell a lot
/// about a service, and there is no access control without a token.
pub fn check_address(address: &SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if !address.ip().is_loopback() && !allow_remote {
        anyhow::bail!(
            "--listen {address} is not a loopback address: stacks and command lines would be open to the network; \
             add --allow-remote (with --token-file) or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Reads the bearer token from `path`: its first line, which must not be empty.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::untrusted::read(path, crate::untrusted::Links::Follow, 4096)
        .map_err(|error| anyhow::anyhow!("cannot read the token file {}: {error}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        anyhow::bail!(
            "the token file {} must hold the token on its first line (printable ASCII, no spaces)",
            path.display()
        );
    }
    Ok(token.to_owned())
}

#[derive(Clone)]
struct Shared {
    asks: mpsc::Sender<Ask>,
    token: Option<Arc<str>>,
}

/// Binds the address now (so that a port in use is an error before tracing starts).
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}; choose another address with --listen"))
}

/// Serves until the session ends (the `asks` receiver is dropped) or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, token: Option<String>, asks: mpsc::Sender<Ask>) {
    let shared = Shared { asks, token: token.map(Arc::from) };
    let router = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_endpoint))
        .route("/debug/pprof/heap", get(heap))
        .route("/debug/pprof/allocs", get(allocs))
        .route("/debug/memtrace/report.json", get(report_json))
        .route("/debug/memtrace/flamegraph.svg", get(flamegraph))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared);
    if let Err(error) = axum::serve(listener, router).await {
        eprintln!("memtrace: warning: the HTTP server stopped: {error}");
    }
}

/// With a token, every request must carry it.
async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.token {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        let expected = format!("Bearer {token}");
        if !given.is_some_and(|given| constant_time_equal(given.as_bytes(), expected.as_bytes())) {
            let mut response = (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guess was right.
fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// The answer to a request whose parameters are wrong.
fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

async fn snapshot(shared: &Shared, pictures: bool) -> Result<Arc<Snapshot>, Response> {
    let (reply, answer) = oneshot::channel();
    let unavailable = || (StatusCode::SERVICE_UNAVAILABLE, "memtrace is stopping\n").into_response();
    shared.asks.send(Ask::Snapshot { pictures, reply }).await.map_err(|_| unavailable())?;
    answer.await.map_err(|_| unavailable())
}

async fn index(State(shared): State<Shared>) -> Response {
    match snapshot(&shared, false).await {
        Ok(snapshot) => html(page::render(&snapshot.report)),
        Err(response) => response,
    }
}

async fn metrics_endpoint(State(shared): State<Shared>) -> Response {
    match snapshot(&shared, true).await {
        Ok(snapshot) => {
            let body = metrics::encode_report(&snapshot);
            ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
        }
        Err(response) => response,
    }
}

async fn heap(State(shared): State<Shared>, Query(query): Query<selection::Query>) -> Response {
    pprof(shared, query, profile::SampleKind::Heap).await
}

async fn allocs(State(shared): State<Shared>, Query(query): Query<selection::Query>) -> Response {
    pprof(shared, query, profile::SampleKind::Allocs).await
}

/// A profile of this moment, or with `?seconds=N` what changed over the next N seconds (Go's
/// delta profiles: the request waits that long).
async fn pprof(shared: Shared, query: selection::Query, kind: profile::SampleKind) -> Response {
    let selection = match Selection::parse(&query) {
        Ok(selection) => selection,
        Err(message) => return bad_request(&message),
    };
    let seconds = match query.seconds.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(seconds)) if (1..=MAX_DELTA_SECONDS).contains(&seconds) => Some(seconds),
        Some(_) => {
            return bad_request(&format!("seconds must be a whole number from 1 to {MAX_DELTA_SECONDS}"));
        }
    };
    let before = match seconds {
        Some(seconds) => {
            let before = match snapshot(&shared, false).await {
                Ok(before) => before,
                Err(response) => return response,
            };
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            Some(before)
        }
        None => None,
    };
    let after = match snapshot(&shared, false).await {
        Ok(after) => after,
        Err(response) => return response,
    };
    let body = profile::encode(&after, before.as_deref(), &selection, kind);
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"profile\""),
    ];
    (headers, body).into_response()
}

async fn report_json(State(shared): State<Shared>, Query(query): Query<selection::Query>) -> Response {
    let selection = match Selection::parse(&query) {
        Ok(selection) => selection,
        Err(message) => return bad_request(&message),
    };
    match snapshot(&shared, false).await {
        Ok(snapshot) => match serde_json::to_vec_pretty(&selection.apply(&snapshot)) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        },
        Err(response) => response,
    }
}

async fn flamegraph(State(shared): State<Shared>, Query(query): Query<selection::Query>) -> Response {
    let selection = match Selection::parse(&query) {
        Ok(selection) => selection,
        Err(message) => return bad_request(&message),
    };
    let snapshot = match snapshot(&shared, false).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let mut body = Vec::new();
    match crate::report::svg::render(&selection.apply(&snapshot), Weight::Bytes, None, &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

fn html(body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    (headers, body).into_response()
}
