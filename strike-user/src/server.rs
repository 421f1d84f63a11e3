//! Strike's own HTTP endpoint (`strike run`): Prometheus metrics, recent records by id,
//! health and status. Bound to localhost unless configured otherwise.
//!
//! | Route | Answer |
//! | --- | --- |
//! | `GET /metrics` | every metric in Prometheus text format |
//! | `GET /v1/requests/{id}` | the record whose `request_id` (or server `response_id`) is `id` |
//! | `GET /v1/requests?limit=N` | the N most recent records, newest first (default 100) |
//! | `GET /v1/status` | the session's counters (capture, streams, tracker, export) |
//! | `GET /healthz` | 200 once capture is attached and while the processor makes progress; 503 before, and when events have waited for it for 10 s |
//!
//! Gathering the metrics and serialising records run on the blocking pool: a large scrape
//! never holds up the runtime's workers, which the ring reader shares.
//!
//! Records hold no prompt or completion text and no credentials (see `docs/EXPORT.md`).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;

use crate::{
    clock::monotonic_ns,
    export::Exporter,
    record::RequestRecord,
    telemetry::{Liveness, Summary},
};

/// How long events may wait with no progress of the processor before `/healthz` fails.
const STALL_PATIENCE_NS: u64 = 10_000_000_000;

/// The most recent records, looked up by Strike's `request_id` or the server's
/// `response_id`. Bounded: the oldest is evicted first (counted).
#[derive(Debug)]
pub struct RecentRecords {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    capacity: usize,
    /// Serve the server's error messages (`otlp.include_error_messages`): they can echo
    /// request content, so by default the endpoint leaves them out as the exporters do.
    error_messages: bool,
    order: VecDeque<Arc<RequestRecord>>,
    by_request_id: HashMap<String, Arc<RequestRecord>>,
    /// Response id → the newest record that carried it.
    by_response_id: HashMap<String, Arc<RequestRecord>>,
    evicted: u64,
}

impl RecentRecords {
    /// Keeps `capacity` records at most (0 keeps none), their `error_message` only with
    /// `error_messages`.
    pub fn new(capacity: usize, error_messages: bool) -> Self {
        Self {
            inner: Mutex::new(Recent {
                capacity,
                error_messages,
                ..Recent::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a record, evicting the oldest when full.
    pub fn insert(&self, mut record: RequestRecord) {
        let mut r = self.lock();
        if !r.error_messages {
            record.error_message = None;
        }
        if r.capacity == 0 {
            r.evicted += 1;
            return;
        }
        while r.order.len() >= r.capacity {
            let Some(old) = r.order.pop_front() else {
                break;
            };
            r.by_request_id.remove(&old.request_id);
            if let Some(id) = &old.response_id {
                if r.by_response_id
                    .get(id)
                    .is_some_and(|cur| Arc::ptr_eq(cur, &old))
                {
                    r.by_response_id.remove(id);
                }
            }
            r.evicted += 1;
        }
        let record = Arc::new(record);
        r.by_request_id
            .insert(record.request_id.clone(), Arc::clone(&record));
        if let Some(id) = &record.response_id {
            r.by_response_id.insert(id.clone(), Arc::clone(&record));
        }
        r.order.push_back(record);
    }

    /// The record with this request id, else the newest with this response id.
    pub fn get(&self, id: &str) -> Option<Arc<RequestRecord>> {
        let r = self.lock();
        r.by_request_id
            .get(id)
            .or_else(|| r.by_response_id.get(id))
            .cloned()
    }

    /// The `limit` newest records, newest first.
    pub fn newest(&self, limit: usize) -> Vec<Arc<RequestRecord>> {
        self.lock()
            .order
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records held, and records evicted so far.
    pub fn counts(&self) -> (usize, u64) {
        let r = self.lock();
        (r.order.len(), r.evicted)
    }
}

/// What the endpoint serves from.
#[derive(Clone)]
pub struct AppState {
    pub exporter: Arc<Exporter>,
    pub recent: Arc<RecentRecords>,
    pub stats: Arc<Mutex<Summary>>,
    /// Set once capture is attached.
    pub ready: Arc<AtomicBool>,
    /// The processor's progress.
    pub liveness: Arc<Liveness>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/requests", get(list_requests))
        .route("/v1/requests/{id}", get(get_request))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Binds `addr` (so that a bad address fails before capture starts) and returns the bound
/// listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs `f` on the blocking pool; a panic there is a 500, not a dead endpoint.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    blocking(move || metrics_text(&state)).await
}

fn metrics_text(state: &AppState) -> Response {
    match state.exporter.prometheus_text() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not kept\n").into_response(),
    }
}

async fn get_request(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.recent.get(&id) {
        Some(record) => Json(&*record).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "not_found",
                "message": "no recent request has this request_id or response_id",
            })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_requests(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || {
        let records = state.recent.newest(q.limit.unwrap_or(100).min(10_000));
        let records: Vec<&RequestRecord> = records.iter().map(AsRef::as_ref).collect();
        Json(records).into_response()
    })
    .await
}

async fn status(State(state): State<AppState>) -> Response {
    blocking(move || status_json(&state)).await
}

fn status_json(state: &AppState) -> Response {
    let summary = state
        .stats
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (held, evicted) = state.recent.counts();
    Json(serde_json::json!({
        "ready": state.ready.load(Ordering::Acquire),
        "session": summary,
        "export": state.exporter.stats(),
        "recent_requests": { "held": held, "evicted": evicted },
    }))
    .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    health(&state, monotonic_ns())
}

fn health(state: &AppState, now_ns: u64) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    match state.liveness.stalled_for(now_ns, STALL_PATIENCE_NS) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(ns) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: events have waited {} s for the processor\n",
                ns / 1_000_000_000
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(request_id: &str, response_id: Option<&str>) -> RequestRecord {
        let mut r = crate::record::testing::sample();
        request_id.clone_into(&mut r.request_id);
        r.response_id = response_id.map(str::to_owned);
        r
    }

    #[test]
    fn error_messages_are_served_only_when_enabled() {
        for enabled in [false, true] {
            let recent = RecentRecords::new(4, enabled);
            let mut r = record("a", None);
            r.error_message = Some("prompt echoed: my secret plan".to_owned());
            recent.insert(r);
            let got = recent.get("a").unwrap();
            assert_eq!(got.error_message.is_some(), enabled);
            let held = recent.newest(10);
            let newest: Vec<&RequestRecord> = held.iter().map(AsRef::as_ref).collect();
            let json = serde_json::to_string(&newest).unwrap();
            assert_eq!(json.contains("secret plan"), enabled);
        }
    }

    #[test]
    fn recent_records_are_bounded_and_found_by_either_id() {
        let recent = RecentRecords::new(2, false);
        recent.insert(record("a", Some("chatcmpl-1")));
        recent.insert(record("b", Some("chatcmpl-2")));
        assert_eq!(recent.get("a").unwrap().request_id, "a");
        assert_eq!(recent.get("chatcmpl-2").unwrap().request_id, "b");
        recent.insert(record("c", Some("chatcmpl-1")));
        assert!(recent.get("a").is_none(), "oldest evicted");
        assert_eq!(
            recent.get("chatcmpl-1").unwrap().request_id,
            "c",
            "a reused response id names the newest record"
        );
        recent.insert(record("d", None));
        assert_eq!(recent.get("chatcmpl-1").unwrap().request_id, "c");
        assert!(recent.get("chatcmpl-2").is_none());
        assert_eq!(recent.counts(), (2, 2));
        let newest: Vec<String> = recent
            .newest(10)
            .iter()
            .map(|r| r.request_id.clone())
            .collect();
        assert_eq!(newest, ["d", "c"]);

        let none = RecentRecords::new(0, false);
        none.insert(record("x", None));
        assert!(none.get("x").is_none());
        assert_eq!(none.counts(), (0, 1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn routes_answer() {
        use crate::export::ExportConfig;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let exporter = Exporter::new(&ExportConfig {
            otlp: false,
            prometheus: true,
            ..ExportConfig::default()
        })
        .unwrap();
        let stats = Arc::new(Mutex::new(Summary::default()));
        exporter.observe_pipeline(Arc::clone(&stats));
        let recent = Arc::new(RecentRecords::new(10, false));
        let rec = record("0194c3a0-0000-7000-8000-00000000abcd", Some("chatcmpl-9"));
        exporter.export(&rec);
        recent.insert(rec);
        let state = AppState {
            exporter: Arc::new(exporter),
            recent,
            stats,
            ready: Arc::new(AtomicBool::new(true)),
            liveness: Arc::new(Liveness::default()),
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async {
            let _ = stop_rx.await;
        }));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        for name in [
            "gen_ai_server_request_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_bucket",
            "strike_requests_total",
            "strike_token_usage_bucket",
            "strike_capture_events_total",
            "strike_capture_lost_total",
            "strike_export_spans_total",
            "strike_targets",
        ] {
            assert!(metrics.contains(name), "{name} missing from\n{metrics}");
        }
        let one = get("/v1/requests/chatcmpl-9").await;
        assert!(one.starts_with("HTTP/1.1 200"), "{one}");
        assert!(one.contains("\"request_id\":\"0194c3a0-0000-7000-8000-00000000abcd\""));
        assert!(get("/v1/requests/nope").await.starts_with("HTTP/1.1 404"));
        assert!(get("/v1/requests?limit=5").await.contains("chatcmpl-9"));
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        let status = get("/v1/status").await;
        assert!(status.contains("\"export\""), "{status}");
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    }

    #[test]
    fn healthz_fails_when_events_wait_on_a_stalled_processor() {
        let state = AppState {
            exporter: Arc::new(Exporter::new(&crate::export::ExportConfig::default()).unwrap()),
            recent: Arc::new(RecentRecords::new(1, false)),
            stats: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
            liveness: Arc::new(Liveness::default()),
        };
        let s = 1_000_000_000;
        state.liveness.progressed(100 * s);
        // Idle: nothing waits, however long since the last turn.
        assert_eq!(health(&state, 200 * s).status(), StatusCode::OK);
        state.liveness.waiting_bytes.store(4096, Ordering::Relaxed);
        assert_eq!(health(&state, 105 * s).status(), StatusCode::OK);
        assert_eq!(
            health(&state, 111 * s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.liveness.progressed(111 * s);
        assert_eq!(health(&state, 112 * s).status(), StatusCode::OK);
        state.ready.store(false, Ordering::Release);
        assert_eq!(
            health(&state, 112 * s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
