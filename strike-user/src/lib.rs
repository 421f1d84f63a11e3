//! Strike's userspace: capture → stream → protocol → llm → tokens → export/output.
//!
//! See `docs/ARCHITECTURE.md` for the stages and the data flow between them.

pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod cost;
pub mod export;
pub mod gpu;
pub mod output;
pub mod server;
pub mod session;
pub mod telemetry;

// The parsers live in their own crate; these paths keep one name for each of them.
#[doc(hidden)]
pub use strike_parse::fuzz;
pub use strike_parse::{clock, conn, event, llm, num, protocol, record, stream, tokens};
