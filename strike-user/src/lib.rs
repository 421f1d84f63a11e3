//! Strike's userspace: capture → stream → protocol → llm → tokens → export/output.
//!
//! See `docs/ARCHITECTURE.md` for the stages and the data flow between them.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod cost;
pub mod event;
pub mod export;
#[doc(hidden)]
pub mod fuzz;
pub mod gpu;
pub mod llm;
pub mod num;
pub mod output;
pub mod protocol;
pub mod record;
pub mod server;
pub mod session;
pub mod stream;
pub mod telemetry;
pub mod tokens;
