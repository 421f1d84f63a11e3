//! Protocol stage: HTTP/1.1 messages, SSE and NDJSON framing, and the per-connection
//! exchange state machine. Bytes in, frames out; no I/O.

pub mod encoding;
pub mod exchange;
pub mod http;
pub mod json;
pub mod ndjson;
pub mod sse;
