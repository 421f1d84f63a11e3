//! A concurrent OpenAI-API load generator that keeps what the server itself reported.
//!
//! `workers` tasks share one HTTP/1.1 client, whose pool keeps their connections alive; each
//! sends `requests_per_worker` requests in turn, cycling through a mix of request kinds with
//! varying `max_tokens` and prompt lengths. Every response is parsed here (SSE `data:` lines or
//! one JSON body) into a [`Sent`].

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::sse::{SseLine, SseSplitter};

/// What kind of request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Chat {
        stream: bool,
        include_usage: bool,
    },
    Completion {
        stream: bool,
        include_usage: bool,
    },
    Embeddings,
    /// The Anthropic Messages API (`/v1/messages`).
    Messages {
        stream: bool,
    },
}

impl Kind {
    /// The `api` value strike reports for this request.
    pub fn api(self) -> &'static str {
        match self {
            Kind::Chat { .. } => "chat_completions",
            Kind::Completion { .. } => "completions",
            Kind::Embeddings => "embeddings",
            Kind::Messages { .. } => "messages",
        }
    }

    pub fn stream(self) -> bool {
        match self {
            Kind::Chat { stream, .. }
            | Kind::Completion { stream, .. }
            | Kind::Messages { stream } => stream,
            Kind::Embeddings => false,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Kind::Chat { .. } => "/v1/chat/completions",
            Kind::Completion { .. } => "/v1/completions",
            Kind::Embeddings => "/v1/embeddings",
            Kind::Messages { .. } => "/v1/messages",
        }
    }

    /// A short label such as `chat/stream+usage`.
    pub fn label(self) -> String {
        let mode = |stream: bool, include_usage: bool| match (stream, include_usage) {
            (false, _) => "json",
            (true, false) => "stream",
            (true, true) => "stream+usage",
        };
        match self {
            Kind::Chat {
                stream,
                include_usage,
            } => format!("chat/{}", mode(stream, include_usage)),
            Kind::Completion {
                stream,
                include_usage,
            } => format!("completion/{}", mode(stream, include_usage)),
            Kind::Embeddings => "embeddings".to_owned(),
            Kind::Messages { stream } => format!("messages/{}", mode(stream, false)),
        }
    }
}

/// The Anthropic Messages API, streamed and not.
pub const MESSAGES_MIX: [Kind; 2] = [
    Kind::Messages { stream: true },
    Kind::Messages { stream: false },
];

/// Streaming with and without `include_usage`, and non-streaming, for both generation APIs.
pub const GENERATION_MIX: [Kind; 6] = [
    Kind::Chat {
        stream: true,
        include_usage: true,
    },
    Kind::Chat {
        stream: true,
        include_usage: false,
    },
    Kind::Chat {
        stream: false,
        include_usage: false,
    },
    Kind::Completion {
        stream: true,
        include_usage: true,
    },
    Kind::Completion {
        stream: true,
        include_usage: false,
    },
    Kind::Completion {
        stream: false,
        include_usage: false,
    },
];

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub base_url: String,
    pub model: String,
    pub workers: usize,
    pub requests_per_worker: usize,
    pub mix: Vec<Kind>,
    /// Inclusive range of `max_tokens`.
    pub max_tokens: (u32, u32),
    /// Per-request limit.
    pub timeout: Duration,
    /// Extra top-level fields for every generation request (e.g. llama.cpp's `cache_prompt`).
    pub extra: Option<Value>,
    /// Send a W3C `traceparent` with every request, its trace id made of this salt and the
    /// request's `seq` (so that several loads never share a trace id).
    pub trace_salt: Option<u64>,
    /// Workers (the first ones) whose requests say `Accept-Encoding: gzip`; the client
    /// decodes what comes back compressed itself, and notes that it was.
    pub gzip_workers: usize,
}

/// Token counts from a `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// llama.cpp's `timings` object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    pub prompt_n: u64,
    pub predicted_n: u64,
    /// Prompt tokens taken from the KV cache instead of being evaluated (newer llama.cpp).
    pub cache_n: Option<u64>,
    pub prompt_ms: f64,
    pub predicted_ms: f64,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub seq: usize,
    pub worker: usize,
    pub kind: Kind,
    pub max_tokens: u32,
    pub prompt_words: usize,
    /// 0 when no response arrived.
    pub status: u16,
    pub response_id: Option<String>,
    pub usage: Option<Usage>,
    pub timings: Option<Timings>,
    /// Stream events with non-empty generated text (chat `delta.content` or completion `text`).
    pub content_deltas: u32,
    /// Whether a stream ended with `data: [DONE]`.
    pub done: bool,
    /// From sending the request to the first non-empty content (streams only).
    pub client_ttft_ms: Option<f64>,
    /// From sending the request to the last byte of the response.
    pub client_e2e_ms: f64,
    pub response_bytes: usize,
    /// Attempts that got no response because the server had closed the pooled connection.
    pub retries: u32,
    pub error: Option<String>,
    /// The `traceparent` sent, when the plan sends them.
    pub traceparent: Option<String>,
    /// The response came `Content-Encoding: gzip`.
    pub compressed: bool,
}

impl Sent {
    /// The trace id of the `traceparent` sent (32 hex digits).
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(|t| t.get(3..35))
    }

    /// The parent span id of the `traceparent` sent (16 hex digits).
    pub fn parent_span_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(|t| t.get(36..52))
    }
}

/// Resends of a request whose pooled connection the server had closed.
const MAX_RETRIES: u32 = 3;

const WORDS: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "token",
    "server", "model", "stream", "answer", "question",
];

fn prompt(words: usize, seed: usize) -> String {
    (0..words)
        .map(|i| WORDS[(seed * 7 + i * 3) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn body(plan: &LoadPlan, kind: Kind, max_tokens: u32, text: &str) -> Value {
    let mut body = match kind {
        Kind::Chat { stream, .. } => json!({
            "model": plan.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "stream": stream,
        }),
        Kind::Completion { stream, .. } => json!({
            "model": plan.model,
            "prompt": text,
            "max_tokens": max_tokens,
            "stream": stream,
        }),
        Kind::Embeddings => return json!({"model": plan.model, "input": text}),
        Kind::Messages { stream } => {
            return json!({
                "model": plan.model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "stream": stream,
            })
        }
    };
    if let Kind::Chat {
        include_usage: true,
        ..
    }
    | Kind::Completion {
        include_usage: true,
        ..
    } = kind
    {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let (Some(Value::Object(extra)), Value::Object(map)) = (&plan.extra, &mut body) {
        map.extend(extra.clone());
    }
    body
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

fn timings_of(v: &Value) -> Option<Timings> {
    let t = v.get("timings")?;
    Some(Timings {
        prompt_n: t.get("prompt_n")?.as_u64()?,
        predicted_n: t.get("predicted_n")?.as_u64()?,
        cache_n: t.get("cache_n").and_then(Value::as_u64),
        prompt_ms: t
            .get("prompt_ms")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN),
        predicted_ms: t
            .get("predicted_ms")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN),
    })
}

/// Generated text of one stream event, if any.
fn event_text(v: &Value) -> Option<&str> {
    let choice = v.get("choices")?.get(0)?;
    choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .or_else(|| choice.get("text"))?
        .as_str()
}

/// Usage of an Anthropic message: every prompt token (uncached, read from and written to
/// the cache) and the output.
fn anthropic_usage(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    Some(Usage {
        prompt_tokens: n("input_tokens")?
            + n("cache_read_input_tokens").unwrap_or(0)
            + n("cache_creation_input_tokens").unwrap_or(0),
        completion_tokens: n("output_tokens").unwrap_or(0),
    })
}

/// Applies one event of an Anthropic Messages stream to `sent` (by its data's `type`).
fn apply_message_event(sent: &mut Sent, v: &Value, since_send: Duration) {
    match v.get("type").and_then(Value::as_str) {
        Some("message_start") => {
            let msg = &v["message"];
            sent.response_id = msg.get("id").and_then(Value::as_str).map(str::to_owned);
            sent.usage = msg.get("usage").and_then(anthropic_usage);
        }
        Some("content_block_delta")
            if v["delta"]
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty()) =>
        {
            sent.content_deltas += 1;
            sent.client_ttft_ms.get_or_insert(ms(since_send));
        }
        Some("message_delta") => {
            if let (Some(u), Some(out)) = (
                &mut sent.usage,
                v["usage"].get("output_tokens").and_then(Value::as_u64),
            ) {
                u.completion_tokens = out;
            }
        }
        Some("message_stop") => sent.done = true,
        _ => {}
    }
}

/// Applies one streamed event to `sent`.
fn apply_event(sent: &mut Sent, v: &Value, since_send: Duration) {
    if sent.response_id.is_none() {
        sent.response_id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    }
    if event_text(v).is_some_and(|t| !t.is_empty()) {
        sent.content_deltas += 1;
        sent.client_ttft_ms.get_or_insert(ms(since_send));
    }
    if let Some(u) = usage_of(v) {
        sent.usage = Some(u);
    }
    if let Some(t) = timings_of(v) {
        sent.timings = Some(t);
    }
}

async fn one(client: &reqwest::Client, plan: &LoadPlan, mut sent: Sent) -> Sent {
    let text = prompt(sent.prompt_words, sent.seq);
    let payload = body(plan, sent.kind, sent.max_tokens, &text).to_string();
    let mut t0 = Instant::now();
    let result: Result<()> = async {
        let url = format!("{}{}", plan.base_url, sent.kind.path());
        let mut resp = loop {
            t0 = Instant::now();
            let mut request = client.post(&url).header("content-type", "application/json");
            if let Some(tp) = &sent.traceparent {
                request = request.header("traceparent", tp);
            }
            if sent.worker < plan.gzip_workers {
                request = request.header("accept-encoding", "gzip");
            }
            let attempt = request.body(payload.clone()).send().await;
            match attempt {
                Ok(resp) => break resp,
                // llama-server closes the connection after every streamed response although it
                // announced keep-alive; a request sent on such a pooled connection before the
                // close was seen gets no response at all, and the server never read it.
                Err(e) if sent.retries < MAX_RETRIES && e.is_request() => sent.retries += 1,
                Err(e) => return Err(e).context("sending"),
            }
        };
        sent.status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        sent.compressed = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut gunzip = sent
            .compressed
            .then(|| flate2::write::GzDecoder::new(Vec::new()));
        let mut whole = Vec::new();
        let mut splitter = SseSplitter::default();
        while let Some(chunk) = resp.chunk().await.context("reading body")? {
            sent.response_bytes += chunk.len();
            let chunk = match &mut gunzip {
                Some(gz) => {
                    gz.write_all(&chunk)
                        .and_then(|()| gz.flush())
                        .context("gunzipping the body")?;
                    bytes::Bytes::from(std::mem::take(gz.get_mut()))
                }
                None => chunk,
            };
            if !is_sse {
                whole.extend_from_slice(&chunk);
                continue;
            }
            for line in splitter.push(&chunk) {
                match line {
                    SseLine::Data(d) if d == "[DONE]" => sent.done = true,
                    SseLine::Data(d) => {
                        let v: Value =
                            serde_json::from_str(&d).with_context(|| format!("bad event {d:?}"))?;
                        if matches!(sent.kind, Kind::Messages { .. }) {
                            apply_message_event(&mut sent, &v, t0.elapsed());
                        } else {
                            apply_event(&mut sent, &v, t0.elapsed());
                        }
                    }
                    SseLine::Error(e) => anyhow::bail!("server sent an error event: {e}"),
                }
            }
        }
        if !is_sse {
            let v: Value = serde_json::from_slice(&whole)
                .with_context(|| format!("bad JSON body {:?}", String::from_utf8_lossy(&whole)))?;
            sent.response_id = v.get("id").and_then(Value::as_str).map(str::to_owned);
            sent.usage = if matches!(sent.kind, Kind::Messages { .. }) {
                v.get("usage").and_then(anthropic_usage)
            } else {
                usage_of(&v)
            };
            sent.timings = timings_of(&v);
        }
        anyhow::ensure!(sent.status == 200, "HTTP {}", sent.status);
        anyhow::ensure!(
            !sent.kind.stream() || is_sse,
            "streaming request answered without event-stream"
        );
        Ok(())
    }
    .await;
    sent.client_e2e_ms = ms(t0.elapsed());
    if let Err(e) = result {
        sent.error = Some(format!("{e:#}"));
    }
    sent
}

async fn worker(client: reqwest::Client, plan: LoadPlan, w: usize) -> Vec<Sent> {
    let mut out = Vec::with_capacity(plan.requests_per_worker);
    let (lo, hi) = plan.max_tokens;
    let span = usize::try_from(hi.saturating_sub(lo)).unwrap_or(0) + 1;
    for i in 0..plan.requests_per_worker {
        let seq = w * plan.requests_per_worker + i;
        let kind = plan.mix[(w + i) % plan.mix.len()];
        let offset = u32::try_from((w * 7 + i * 5) % span).unwrap_or(0);
        let sent = Sent {
            compressed: false,
            seq,
            worker: w,
            kind,
            max_tokens: lo + offset,
            prompt_words: 1 + (w * 3 + i * 11) % 40,
            status: 0,
            response_id: None,
            usage: None,
            timings: None,
            content_deltas: 0,
            done: false,
            client_ttft_ms: None,
            client_e2e_ms: 0.0,
            response_bytes: 0,
            retries: 0,
            error: None,
            traceparent: plan.trace_salt.map(|salt| {
                let seq = seq as u64 + 1;
                format!("00-{salt:016x}{seq:016x}-{:016x}-01", (salt << 32) | seq)
            }),
        };
        out.push(
            tokio::time::timeout(plan.timeout, one(&client, &plan, sent.clone()))
                .await
                .unwrap_or_else(|_| Sent {
                    error: Some(format!("timed out after {:?}", plan.timeout)),
                    ..sent
                }),
        );
    }
    out
}

/// Total resends over `sent` (see [`Sent::retries`]).
pub fn retries(sent: &[Sent]) -> u32 {
    sent.iter().map(|s| s.retries).sum()
}

/// Sends the whole plan and returns one [`Sent`] per request, in `seq` order.
pub fn run_load(plan: &LoadPlan) -> Result<Vec<Sent>> {
    anyhow::ensure!(!plan.mix.is_empty() && plan.workers > 0, "empty load plan");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(plan.workers)
            .build()
            .context("building the HTTP client")?;
        let tasks: Vec<_> = (0..plan.workers)
            .map(|w| tokio::spawn(worker(client.clone(), plan.clone(), w)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.context("load worker panicked")?);
        }
        all.sort_by_key(|s| s.seq);
        Ok(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(kind: Kind) -> Sent {
        Sent {
            compressed: false,
            seq: 0,
            worker: 0,
            kind,
            max_tokens: 4,
            prompt_words: 1,
            status: 200,
            response_id: None,
            usage: None,
            timings: None,
            content_deltas: 0,
            done: false,
            client_ttft_ms: None,
            client_e2e_ms: 0.0,
            response_bytes: 0,
            retries: 0,
            error: None,
            traceparent: None,
        }
    }

    #[test]
    fn stream_events_fill_id_deltas_usage_and_timings() {
        let mut s = blank(Kind::Chat {
            stream: true,
            include_usage: true,
        });
        let events = [
            json!({"id": "c1", "choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "c1", "choices": [{"delta": {"content": "a"}}], "usage": null}),
            json!({"id": "c1", "choices": [{"delta": {"content": "b"}}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2},
                   "timings": {"prompt_n": 5, "cache_n": 2, "predicted_n": 2, "prompt_ms": 1.5, "predicted_ms": 3.0}}),
        ];
        for (i, e) in events.iter().enumerate() {
            apply_event(&mut s, e, Duration::from_millis(u64::try_from(i).unwrap()));
        }
        assert_eq!(s.response_id.as_deref(), Some("c1"));
        assert_eq!(s.content_deltas, 2);
        assert_eq!(s.client_ttft_ms, Some(1.0));
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        let t = s.timings.unwrap();
        assert_eq!((t.prompt_n, t.cache_n, t.predicted_n), (5, Some(2), 2));
    }

    #[test]
    fn completion_text_counts_as_a_delta() {
        let mut s = blank(Kind::Completion {
            stream: true,
            include_usage: false,
        });
        apply_event(
            &mut s,
            &json!({"id": "x", "choices": [{"text": "hi"}]}),
            Duration::ZERO,
        );
        apply_event(
            &mut s,
            &json!({"id": "x", "choices": [{"text": ""}]}),
            Duration::ZERO,
        );
        assert_eq!(s.content_deltas, 1);
    }

    #[test]
    fn bodies_carry_stream_options_only_with_include_usage() {
        let plan = LoadPlan {
            base_url: String::new(),
            model: "m".into(),
            workers: 1,
            requests_per_worker: 1,
            mix: GENERATION_MIX.to_vec(),
            max_tokens: (1, 1),
            timeout: Duration::from_secs(1),
            extra: Some(json!({"cache_prompt": false})),
            trace_salt: None,
            gzip_workers: 0,
        };
        let b = body(
            &plan,
            Kind::Chat {
                stream: true,
                include_usage: true,
            },
            3,
            "hi",
        );
        assert_eq!(b["stream_options"]["include_usage"], json!(true));
        assert_eq!(b["cache_prompt"], json!(false));
        let b = body(
            &plan,
            Kind::Completion {
                stream: true,
                include_usage: false,
            },
            3,
            "hi",
        );
        assert!(b.get("stream_options").is_none());
        assert_eq!(b["prompt"], json!("hi"));
        let b = body(&plan, Kind::Embeddings, 3, "hi");
        assert!(b.get("max_tokens").is_none());
    }
}
