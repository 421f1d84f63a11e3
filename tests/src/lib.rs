//! Strike's end-to-end harness: real inference servers, real HTTP load, and `strike trace`.
//!
//! The pieces, each usable on its own:
//! - [`env`]: where the binaries are (set by `cargo xtask test`) and whether this process may
//!   load eBPF programs; outside CI a test without the capability skips with a printed reason,
//!   under `CI=true` it fails.
//! - [`process`]: start a server on a free 127.0.0.1 port and wait for its health endpoint;
//!   start `strike trace --format json` and wait for `strike: attached`; stop both.
//! - [`load`]: a concurrent load generator over kept-alive connections that parses every
//!   response itself and keeps what the server reported (id, usage, llama.cpp timings, deltas).
//! - [`native`]: load in the native APIs' shapes (TGI, Triton, rerank, score, `count_tokens`) and
//!   bodiless responses, matched to records by `traceparent`.
//! - [`servers`]: llama-server and the uvicorn app, started the same way by every test.
//! - [`sse`]: the `data:` line splitter the load generator uses.
//! - [`hostile`]: hostile clients (header floods, giant model names, trickles, random bytes,
//!   pipelined garbage, resets, half-open connections), bounded in count and time.
//! - [`scenario`]: trace a server under load and check every request (the e2e suites' core).
//! - [`check`]: matches strike's records to the requests sent and lists every disagreement.

pub mod check;
pub mod collector;
pub mod env;
pub mod hostile;
pub mod load;
pub mod native;
pub mod process;
pub mod scenario;
pub mod servers;
pub mod sse;
