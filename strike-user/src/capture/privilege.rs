//! The capabilities capture needs, decided from the effective set alone (not from the uid):
//! root in a container whose capabilities were dropped fails the same checks as any uid, and
//! a non-root uid that holds these capabilities passes them.
//!
//! Each capability below was found by running `strike` as uid 65534 holding all of them but
//! that one (see `deploy/README.md`, "Privileges"). The parsing and the decision are pure
//! functions; [`effective`] is the only read.

use std::fmt;

/// A Linux capability, by its number in `linux/capability.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    DacOverride = 1,
    DacReadSearch = 2,
    SysPtrace = 19,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Cap {
    /// The name as in `capabilities(7)`, `CAP_BPF`.
    pub fn name(self) -> &'static str {
        match self {
            Cap::DacOverride => "CAP_DAC_OVERRIDE",
            Cap::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities, as the bit mask of `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The `CapEff:` line of a `/proc/PID/status` text (16 hex digits).
    pub fn from_status(status: &str) -> Option<CapSet> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(CapSet)
    }

    pub fn has(self, cap: Cap) -> bool {
        self.0 & cap.bit() != 0
    }

    /// The set with `caps` in it too.
    #[must_use]
    pub fn with(self, caps: &[Cap]) -> CapSet {
        CapSet(caps.iter().fold(self.0, |m, c| m | c.bit()))
    }
}

/// One capability capture needs, what needs it, and which broader capabilities also grant it.
#[derive(Debug, PartialEq, Eq)]
pub struct Requirement {
    pub cap: Cap,
    /// Capabilities that the kernel accepts instead (`CAP_SYS_ADMIN` predates `CAP_BPF`).
    pub or: &'static [Cap],
    /// What fails without it ("to ...").
    pub needed_for: &'static str,
}

impl Requirement {
    pub fn met_by(&self, caps: CapSet) -> bool {
        caps.has(self.cap) || self.or.iter().any(|&c| caps.has(c))
    }
}

/// Every capability capture needs, in the order they are listed to the user.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        cap: Cap::Bpf,
        or: &[Cap::SysAdmin],
        needed_for: "to load the eBPF programs and create their maps",
    },
    Requirement {
        cap: Cap::Perfmon,
        or: &[Cap::SysAdmin],
        needed_for: "to load tracepoint programs and attach them with perf_event_open",
    },
    Requirement {
        cap: Cap::DacReadSearch,
        or: &[Cap::DacOverride],
        needed_for: "to read the root-only tracepoint ids and formats in tracefs and to list /proc/PID/fd of other users' processes",
    },
    Requirement {
        cap: Cap::SysPtrace,
        or: &[],
        needed_for: "to read the /proc/PID/fd links of other processes: how --port finds its server, and how sockets a target already has open are found",
    },
];

/// The requirements that `caps` does not meet.
pub fn missing(caps: CapSet) -> Vec<&'static Requirement> {
    REQUIREMENTS.iter().filter(|r| !r.met_by(caps)).collect()
}

/// The capability names of every requirement, lower case with `+ep`, for `setcap`.
pub fn setcap_list() -> String {
    let names: Vec<String> = REQUIREMENTS
        .iter()
        .map(|r| r.cap.name().to_ascii_lowercase())
        .collect();
    format!("{}+ep", names.join(","))
}

/// The names Kubernetes uses (`BPF`), for `securityContext.capabilities.add`.
pub fn kubernetes_list() -> String {
    let names: Vec<&str> = REQUIREMENTS
        .iter()
        .map(|r| r.cap.name().trim_start_matches("CAP_"))
        .collect();
    names.join(", ")
}

/// One line per missing capability: the capability and what needs it.
pub fn describe(missing: &[&Requirement]) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|r| format!("{} ({})", r.cap, r.needed_for))
        .collect();
    lines.join("; ")
}

/// The effective capabilities of this process.
pub fn effective() -> std::io::Result<CapSet> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    CapSet::from_status(&status)
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_STATUS: &str = "Name:\tstrike\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn parses_cap_eff_of_root() {
        let caps = CapSet::from_status(ROOT_STATUS).unwrap();
        assert_eq!(caps, CapSet(0x1ff_ffff_ffff));
        assert!(missing(caps).is_empty());
    }

    #[test]
    fn parses_cap_eff_not_cap_prm() {
        // setpriv --reuid 65534 --inh-caps +bpf,+perfmon --ambient-caps +bpf,+perfmon
        let status = "CapPrm:\t000001ffffffffff\nCapEff:\t000000c000000000\n";
        let caps = CapSet::from_status(status).unwrap();
        assert!(caps.has(Cap::Bpf) && caps.has(Cap::Perfmon));
        assert!(!caps.has(Cap::SysAdmin));
    }

    #[test]
    fn rejects_a_status_without_cap_eff_or_with_garbage() {
        assert_eq!(CapSet::from_status("Name:\tx\nCapPrm:\t0\n"), None);
        assert_eq!(CapSet::from_status("CapEff:\tzz\n"), None);
    }

    #[test]
    fn the_listed_capabilities_suffice() {
        let caps =
            CapSet::default().with(&[Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch, Cap::SysPtrace]);
        assert!(missing(caps).is_empty());
    }

    #[test]
    fn each_listed_capability_is_needed() {
        let all = [Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch, Cap::SysPtrace];
        for drop in all {
            let rest: Vec<Cap> = all.iter().copied().filter(|&c| c != drop).collect();
            let got: Vec<Cap> = missing(CapSet::default().with(&rest))
                .iter()
                .map(|r| r.cap)
                .collect();
            assert_eq!(got, vec![drop]);
        }
    }

    #[test]
    fn broader_capabilities_stand_in() {
        // Kernels before 5.8 have no CAP_BPF/CAP_PERFMON: CAP_SYS_ADMIN grants both.
        let caps = CapSet::default().with(&[Cap::SysAdmin, Cap::DacOverride, Cap::SysPtrace]);
        assert!(missing(caps).is_empty());
    }

    #[test]
    fn nothing_held_lists_all_in_order() {
        let got: Vec<Cap> = missing(CapSet::default()).iter().map(|r| r.cap).collect();
        assert_eq!(
            got,
            vec![Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch, Cap::SysPtrace]
        );
    }

    #[test]
    fn fix_lists() {
        assert_eq!(
            setcap_list(),
            "cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace+ep"
        );
        assert_eq!(
            kubernetes_list(),
            "BPF, PERFMON, DAC_READ_SEARCH, SYS_PTRACE"
        );
        let m =
            missing(CapSet::default().with(&[Cap::Perfmon, Cap::DacReadSearch, Cap::SysPtrace]));
        assert_eq!(
            describe(&m),
            "CAP_BPF (to load the eBPF programs and create their maps)"
        );
    }
}
