//! Strike's userspace: capture → stream → protocol → llm → tokens → export/output.
//!
//! See `docs/ARCHITECTURE.md` for the stages and the data flow between them.

pub mod capture;
pub mod cli;
pub mod config;
pub mod conn;
pub mod cost;
pub mod export;
pub mod gpu;
pub mod llm;
pub mod output;
pub mod pipeline;
pub mod protocol;
pub mod record;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod tokens;
