//! Output of `strike trace`: a human table, or JSON lines (one record per line).

use std::io::{self, Write};

use crate::record::RequestRecord;

/// How records are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object per record per line.
    Json,
}

/// Writes records in one format.
pub struct RecordWriter<W: Write> {
    out: W,
    format: Format,
    rows: u64,
}

const HEADER: &str = "TIME          PID      METHOD PATH                   STATUS MODEL                STREAM    IN   OUT SOURCE     TTFT_MS    E2E_MS  TPOT_MS NOTE";

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        RecordWriter {
            out,
            format,
            rows: 0,
        }
    }

    /// Writes one record. Errors are the output's (a closed pipe ends the session quietly).
    pub fn write(&mut self, record: &RequestRecord) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, record).map_err(io::Error::other)?;
                self.out.write_all(b"\n")?;
            }
            Format::Table => {
                if self.rows.is_multiple_of(40) {
                    writeln!(self.out, "{HEADER}")?;
                }
                writeln!(self.out, "{}", table_row(record))?;
            }
        }
        self.rows += 1;
        self.out.flush()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// One table row.
pub fn table_row(r: &RequestRecord) -> String {
    // "2026-11-23T19:59:01.123456789Z" -> "19:59:01.123"
    let time = r.start.get(11..23).unwrap_or(&r.start);
    let mut note = Vec::new();
    if let Some(e) = &r.error {
        note.push(format!("error={e}"));
    }
    if r.partial {
        note.push(format!(
            "partial({})",
            r.partial_reason.as_deref().unwrap_or("?")
        ));
    }
    if let Some(f) = &r.finish_reason {
        note.push(f.clone());
    }
    if let Some(cost) = r.cost_usd {
        note.push(format!(
            "${cost:.6} {:.3}GPU-s {:.1}J",
            r.gpu_seconds.unwrap_or(0.0),
            r.gpu_energy_j.unwrap_or(0.0)
        ));
    }
    format!(
        "{:<13} {:<8} {:<6} {:<22} {:<6} {:<20} {:<6} {:>5} {:>5} {:<10} {:>7} {:>9} {:>8} {}",
        time,
        r.pid,
        cut(&r.method, 6),
        cut(&r.path, 22),
        opt(r.status),
        cut(r.model.as_deref().unwrap_or("-"), 20),
        if r.stream { "yes" } else { "no" },
        opt(r.input_tokens),
        opt(r.output_tokens),
        serde_json::to_value(r.token_source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        ms(r.ttft_ms),
        ms(r.e2e_ms),
        ms(r.tpot_ms),
        note.join(" ")
    )
}
