//! Recorded GPU samples (`--gpu-replay FILE`): one JSON object per line, either a
//! [`DeviceSample`] or a process-tree fact `{"process": {"pid": 11, "ppid": 10}}`, in time
//! order. The same pipeline consumes them as NVML samples, deterministically.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DeviceSample, GpuError};

/// One line of a GPU recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplayLine {
    /// A process and its parent: GPU workers that the capture did not see fork.
    Process {
        process: ProcessFact,
    },
    Sample(DeviceSample),
}

/// `pid`'s parent is `ppid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFact {
    pub pid: u32,
    pub ppid: u32,
}

/// Parses a whole recording.
pub fn parse(path: &str, text: &str) -> Result<Vec<ReplayLine>, GpuError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| GpuError::Replay {
                path: path.to_owned(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Reads and parses a recording.
pub fn read(path: &Path) -> Result<Vec<ReplayLine>, GpuError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GpuError::Io {
        path: name.clone(),
        source,
    })?;
    parse(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_process_facts() {
        let text = r#"
# a comment
{"process": {"pid": 11, "ppid": 10}}
{"ts_ns": 1000, "index": 0, "uuid": "GPU-0", "name": "NVIDIA H100", "energy_mj": 5, "processes": [{"pid": 11}]}
"#;
        let lines = parse("t", text).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(matches!(
            lines[0],
            ReplayLine::Process {
                process: ProcessFact { pid: 11, ppid: 10 }
            }
        ));
        let ReplayLine::Sample(s) = &lines[1] else {
            panic!("{lines:?}")
        };
        assert_eq!(
            (s.ts_ns, s.energy_mj, s.processes[0].pid),
            (1000, Some(5), 11)
        );
        let e = parse("t", "{\"ts_ns\": \"x\"}").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
