//! Strike's I/O-free parsers, apart from the session that feeds them (as `aya-obj` stands
//! apart from `aya`): kernel capture events in ([`event`]), reassembled streams
//! ([`stream`], [`conn`]), HTTP/1.1, SSE and NDJSON ([`protocol`]), LLM API semantics and
//! the request tracker ([`llm`]), token counts ([`tokens`]), and the per-request record
//! ([`record`]). Bytes in, records out: no I/O, no tokio, no aya, no OpenTelemetry; every
//! input is hostile and every bound is counted.

pub mod clock;
pub mod conn;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod llm;
mod lru;
pub mod num;
pub mod protocol;
pub mod record;
pub mod stream;
pub mod tokens;
