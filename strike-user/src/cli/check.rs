//! `strike check`: the preflight a user runs on a host or in the pod before deploying, and
//! the container image's health probe (`--no-load`). Reads the same configuration as
//! `strike run` (file, `STRIKE_*` variables, flags), so it checks what the agent would use.

use std::{fmt::Write as _, path::PathBuf};

use super::{run::RunArgs, GpuMode, SessionArgs, TargetArgs, UsageError};
use crate::check::{self, probe::Options, GpuFacts, Report, TargetProcess};

#[derive(clap::Args, Debug, Default)]
#[command(after_help = "\
Exit status: 0 when Strike can run here as configured (warnings included), 1 when an item \
failed (each with its fix), 2 for a bad command line or configuration.")]
pub struct CheckArgs {
    /// YAML config file, as for `strike run` (default: `$STRIKE_CONFIG`).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub targets: TargetArgs,
    /// GPU sampling to check: auto, on (NVML required) or off.
    #[arg(long, value_enum, value_name = "MODE")]
    pub gpu: Option<GpuMode>,
    /// OTLP collector URL to check.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Do not check the OTLP collector.
    #[arg(long)]
    pub no_otlp: bool,
    /// Address of the endpoint to check, or `none`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Do not load and attach the eBPF programs (a periodic health probe).
    #[arg(long)]
    pub no_load: bool,
    /// Output: human or json.
    #[arg(long, value_enum, default_value = "human", value_name = "FORMAT")]
    pub format: CheckFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckFormat {
    #[default]
    Human,
    Json,
}

/// Runs the checks and prints the report; an error (exit 1) when an item failed.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let run_args = RunArgs {
        config: args.config.clone(),
        session: SessionArgs {
            targets: args.targets.clone(),
            gpu: args.gpu,
            ..SessionArgs::default()
        },
        otlp_endpoint: args.otlp_endpoint.clone(),
        no_otlp: args.no_otlp,
        listen: args.listen.clone(),
        ..RunArgs::default()
    };
    // Checking the host needs no selection; one given is checked too.
    let config = run_args
        .loader()?
        .without_targets()
        .load()
        .map_err(UsageError::from)?;
    let report = check::probe::run(
        &config,
        Options {
            load: !args.no_load,
        },
    );
    match args.format {
        CheckFormat::Human => print!("{}", human(&report)),
        CheckFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| UsageError(format!("serialising the report: {e}")))?
        ),
    }
    if report.ok {
        Ok(())
    } else {
        let names: Vec<&str> = report.failures().map(|c| c.name).collect();
        anyhow::bail!("check failed: {}", names.join(", "))
    }
}

/// The report for a terminal: one line an item, its fix under it, then GPUs and targets.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let warnings = report
        .checks
        .iter()
        .filter(|c| c.status == check::Status::Warn)
        .count();
    let failures = report.failures().count();
    let verdict = if report.ok {
        format!("Strike {} can run here", report.version)
    } else {
        format!(
            "Strike {} cannot run here: {failures} item(s) failed",
            report.version
        )
    };
    let _ = writeln!(out, "strike check: {verdict} ({warnings} warning(s))");
    for item in &report.checks {
        let _ = writeln!(
            out,
            "  {:<5} {:<14} {}",
            item.status.word(),
            item.name,
            item.detail
        );
        if let Some(fix) = &item.fix {
            let _ = writeln!(out, "  {:<5} {:<14} fix: {fix}", "", "");
        }
    }
    if let Some(gpu) = &report.gpu {
        out.push_str(&gpus(gpu));
    }
    if let Some(targets) = &report.targets {
        out.push_str(&processes(targets));
    }
    out
}

fn gpus(gpu: &GpuFacts) -> String {
    const GIB: f64 = 1_073_741_824.0;
    #[expect(clippy::cast_precision_loss, reason = "GiB for display")]
    let gib =
        |b: Option<u64>| b.map_or_else(|| "?".to_owned(), |b| format!("{:.1}", b as f64 / GIB));
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} {unit}"))
    };
    let mut out = format!(
        "GPUs (NVML, driver {}):\n",
        gpu.driver_version.as_deref().unwrap_or("?")
    );
    for d in &gpu.devices {
        let procs: Vec<String> = d
            .processes
            .iter()
            .map(|p| format!("{} ({} GiB)", p.pid, gib(p.used_memory_bytes)))
            .collect();
        let _ = writeln!(
            out,
            "  {} {} {}: power {}, energy counter {}, memory {}/{} GiB, MIG {}, processes: {}",
            d.index,
            d.name,
            d.uuid,
            opt(d.power_w, "W"),
            opt(d.energy_j, "J"),
            gib(d.memory_used_bytes),
            gib(d.memory_total_bytes),
            match d.mig_enabled {
                Some(true) => "on",
                Some(false) => "off",
                None => "n/a",
            },
            if procs.is_empty() {
                "none".to_owned()
            } else {
                procs.join(", ")
            },
        );
    }
    out
}

fn processes(targets: &[TargetProcess]) -> String {
    let mut out = String::from("Would trace:\n");
    if targets.is_empty() {
        out.push_str("  nothing yet\n");
    }
    for t in targets {
        let ports: Vec<String> = t.listening.iter().map(u16::to_string).collect();
        let _ = writeln!(
            out,
            "  pid {} {} ({}): {} socket(s), listening on {}{}; tokens: {}",
            t.pid,
            t.comm,
            t.exe.as_deref().unwrap_or("exe unreadable"),
            t.sockets,
            if ports.is_empty() {
                "nothing".to_owned()
            } else {
                ports.join(", ")
            },
            t.container_id
                .as_deref()
                .map_or_else(String::new, |c| format!(
                    ", container {}",
                    &c[..c.len().min(12)]
                )),
            t.tokenizer,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Item;

    #[test]
    fn human_output_shows_fixes_and_the_verdict() {
        let report = Report::new(
            vec![
                Item::ok("kernel", "Linux 6.18"),
                Item::fail("tracefs", "not mounted", "mount it"),
            ],
            None,
            Some(vec![]),
        );
        let text = human(&report);
        assert!(text.starts_with("strike check: Strike "), "{text}");
        assert!(
            text.contains("cannot run here: 1 item(s) failed (0 warning(s))"),
            "{text}"
        );
        assert!(
            text.contains("  FAIL  tracefs        not mounted\n"),
            "{text}"
        );
        assert!(text.contains("fix: mount it\n"), "{text}");
        assert!(text.contains("Would trace:\n  nothing yet\n"), "{text}");
    }
}
