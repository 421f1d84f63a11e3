//! Target discovery from `/proc`: processes by pid, listening port or name, their
//! descendants, and the sockets they already have open. The text parsers are pure
//! functions; the thin readers around them take a `/proc` root so tests can use a fixture.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

/// One TCP socket from `/proc/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state (`0x0A` is LISTEN).
    pub state: u8,
    pub inode: u64,
}

/// TCP state LISTEN in `/proc/net/tcp`.
pub const TCP_LISTEN: u8 = 0x0A;

/// A socket fd a target already had open when capture started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSocket {
    pub fd: u32,
    pub inode: u64,
    /// The TCP entry, when the socket is TCP (unix sockets have none).
    pub tcp: Option<TcpSocket>,
}

/// Reads `/proc`, or a fixture standing in for it.
#[derive(Clone, Debug)]
pub struct Proc {
    root: PathBuf,
}

impl Default for Proc {
    fn default() -> Self {
        Proc {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Proc {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Proc { root: root.into() }
    }

    /// Every process id.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    pub fn exists(&self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    /// `comm` of a process.
    pub fn comm(&self, pid: u32) -> Option<String> {
        let s = fs::read_to_string(self.root.join(format!("{pid}/comm"))).ok()?;
        Some(s.trim_end_matches('\n').to_string())
    }

    /// The thread group id of a task id (differs from `tid` for a thread).
    pub fn tgid(&self, tid: u32) -> Option<u32> {
        let s = fs::read_to_string(self.root.join(format!("{tid}/status"))).ok()?;
        parse_status_field(&s, "Tgid:")
    }

    /// Whether `pid` runs: it exists and is neither a zombie nor dead. A zombie keeps its
    /// `/proc` entry (and cgroup) until reaped, but will never do I/O again.
    pub fn is_live(&self, pid: u32) -> bool {
        fs::read_to_string(self.root.join(format!("{pid}/stat")))
            .ok()
            .and_then(|s| parse_stat_state(&s))
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
    }

    /// When a live process started (`starttime` of `/proc/PID/stat`, clock ticks since
    /// boot): with its pid, it names the process, so a reused pid is told apart. `None`
    /// for a process that is gone or a zombie.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        let stat = fs::read_to_string(self.root.join(format!("{pid}/stat"))).ok()?;
        if matches!(parse_stat_state(&stat)?, 'Z' | 'X' | 'x') {
            return None;
        }
        parse_stat_start_time(&stat)
    }

    /// Parent process id.
    pub fn ppid(&self, pid: u32) -> Option<u32> {
        let s = fs::read_to_string(self.root.join(format!("{pid}/stat"))).ok()?;
        parse_stat_ppid(&s)
    }

    /// Processes whose `comm` equals `name` (the kernel cuts comm to 15 bytes, so a longer
    /// name matches on its first 15 bytes).
    pub fn pids_by_comm(&self, name: &str) -> Vec<u32> {
        let want: String = name.chars().take(15).collect();
        self.pids()
            .into_iter()
            .filter(|&p| self.comm(p).is_some_and(|c| c == want))
            .collect()
    }

    /// `pids` and all their descendants.
    pub fn with_descendants(&self, pids: &BTreeSet<u32>) -> BTreeSet<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in self.pids() {
            if let Some(pp) = self.ppid(p) {
                children.entry(pp).or_default().push(p);
            }
        }
        let mut out = pids.clone();
        let mut stack: Vec<u32> = pids.iter().copied().collect();
        while let Some(p) = stack.pop() {
            for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
                if out.insert(c) {
                    stack.push(c);
                }
            }
        }
        out
    }

    /// Socket inodes of a process, with their fd numbers.
    pub fn socket_fds(&self, pid: u32) -> Vec<(u32, u64)> {
        let Ok(dir) = fs::read_dir(self.root.join(format!("{pid}/fd"))) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let e = e.ok()?;
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(e.path()).ok()?;
            Some((fd, parse_socket_link(link.to_str()?)?))
        })
        .collect()
    }

    /// TCP sockets (IPv4 and IPv6) in the network namespace of `pid`.
    pub fn tcp_sockets(&self, pid: u32) -> Vec<TcpSocket> {
        let mut out = Vec::new();
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            let path = self.root.join(format!("{pid}/net/{file}"));
            if let Ok(text) = fs::read_to_string(path) {
                out.extend(parse_net_tcp(&text, v6));
            }
        }
        out
    }

    /// Processes with a socket listening on `port`.
    pub fn pids_listening_on(&self, port: u16) -> Vec<u32> {
        let mut out = Vec::new();
        let mut checked_ns: HashSet<PathBuf> = HashSet::new();
        let mut inodes: HashSet<u64> = HashSet::new();
        for pid in self.pids() {
            // Processes in one network namespace share the table; read it once per namespace.
            let ns = fs::read_link(self.root.join(format!("{pid}/ns/net")))
                .unwrap_or_else(|_| PathBuf::from(format!("pid:{pid}")));
            if checked_ns.insert(ns) {
                inodes.extend(
                    self.tcp_sockets(pid)
                        .into_iter()
                        .filter(|s| s.state == TCP_LISTEN && s.local.port() == port)
                        .map(|s| s.inode),
                );
            }
        }
        if inodes.is_empty() {
            return out;
        }
        for pid in self.pids() {
            if self
                .socket_fds(pid)
                .iter()
                .any(|(_, ino)| inodes.contains(ino))
            {
                out.push(pid);
            }
        }
        out
    }

    /// Sockets `pid` has open now, with their TCP entries where they are TCP.
    pub fn open_sockets(&self, pid: u32) -> Vec<OpenSocket> {
        let tcp: HashMap<u64, TcpSocket> = self
            .tcp_sockets(pid)
            .into_iter()
            .map(|s| (s.inode, s))
            .collect();
        self.socket_fds(pid)
            .into_iter()
            .map(|(fd, inode)| OpenSocket {
                fd,
                inode,
                tcp: tcp.get(&inode).copied(),
            })
            .collect()
    }

    /// The cgroup paths of a process: the v2 path and every v1 hierarchy's, deduplicated.
    pub fn cgroups(&self, pid: u32) -> Vec<String> {
        fs::read_to_string(self.root.join(format!("{pid}/cgroup")))
            .map(|text| parse_cgroup(&text))
            .unwrap_or_default()
    }

    /// Processes any of whose cgroup paths contains `needle`.
    pub fn pids_by_cgroup(&self, needle: &str) -> Vec<u32> {
        self.pids()
            .into_iter()
            .filter(|&p| self.cgroups(p).iter().any(|c| c.contains(needle)))
            .collect()
    }

    /// Processes in a container whose id starts with `prefix` (lowercase hex).
    pub fn pids_by_container(&self, prefix: &str) -> Vec<u32> {
        self.pids()
            .into_iter()
            .filter(|&p| container_id(&self.cgroups(p)).is_some_and(|id| id.starts_with(prefix)))
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The paths of `/proc/PID/cgroup` (`hierarchy:controllers:path` lines), deduplicated, in
/// order.
pub fn parse_cgroup(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        if !path.is_empty() && !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
    }
    out
}

/// The container id in cgroup paths: the first 64-hex-digit id found in a path segment, as
/// container runtimes name them (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/docker/<id>`, `/kubepods/.../<id>`).
pub fn container_id(paths: &[String]) -> Option<String> {
    paths.iter().flat_map(|p| p.split('/')).find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = segment.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

/// The Kubernetes pod UID in cgroup paths: `kubepods-burstable-pod<uid>.slice` (systemd
/// driver, `_` for `-`) or `/kubepods/burstable/pod<uid>/` (cgroupfs driver).
pub fn pod_uid(paths: &[String]) -> Option<String> {
    paths.iter().flat_map(|p| p.split('/')).find_map(|segment| {
        let segment = segment.strip_suffix(".slice").unwrap_or(segment);
        let uid = segment.rsplit('-').next()?.strip_prefix("pod")?;
        let uid = uid.replace('_', "-");
        (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            .then(|| uid.to_ascii_lowercase())
    })
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The ppid field of `/proc/PID/stat` (the comm field may contain spaces and parentheses).
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The starttime field (the 22nd) of `/proc/PID/stat`.
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z` for a zombie, `X` for dead, …).
pub fn parse_stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn parse_status_field(status: &str, field: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_net_tcp(text: &str, v6: bool) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let local = parse_hex_addr(f.next()?, v6)?;
            let remote = parse_hex_addr(f.next()?, v6)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let inode = f.nth(5)?.parse().ok()?;
            Some(TcpSocket {
                local,
                remote,
                state,
                inode,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4, as four native-endian u32 words for IPv6) → address.
fn parse_hex_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip: IpAddr = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut octets = [0u8; 16];
        for (i, chunk) in octets.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ipv6Addr::from(octets).into()
    } else {
        let word = u32::from_str_radix(ip, 16).ok()?;
        Ipv4Addr::from(word.to_le_bytes()).into()
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_proc_net_tcp() {
        let s = parse_net_tcp(TCP, false);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s[0].state, TCP_LISTEN);
        assert_eq!(s[0].inode, 31337);
        assert_eq!(s[1].remote, "127.0.0.1:54321".parse().unwrap());
        let s6 = parse_net_tcp(TCP6, true);
        assert_eq!(s6[0].local, "[::1]:8081".parse().unwrap());
        assert_eq!(s6[0].inode, 4242);
    }

    #[test]
    fn parses_cgroups_and_container_ids() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let v2 = format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope\n");
        let paths = parse_cgroup(&v2);
        assert_eq!(paths.len(), 1);
        assert_eq!(container_id(&paths).as_deref(), Some(id));
        let hybrid = format!("9:name=systemd:/\n4:memory:/docker/{id}\n0::/\n1:cpu:/\n");
        let paths = parse_cgroup(&hybrid);
        assert_eq!(paths, ["/", format!("/docker/{id}").as_str()]);
        assert_eq!(container_id(&paths).as_deref(), Some(id));
        for other in [
            format!("0::/system.slice/docker-{}.scope", id.to_ascii_uppercase()),
            format!("0::/machine.slice/libpod-{id}.scope/container"),
            format!("0::/crio-{id}.scope"),
        ] {
            assert_eq!(
                container_id(&parse_cgroup(&other)).as_deref(),
                Some(id),
                "{other}"
            );
        }
        assert_eq!(
            container_id(&parse_cgroup("0::/user.slice/session-3.scope\n")),
            None
        );
        assert_eq!(
            container_id(&parse_cgroup(&format!("0::/x/{}\n", &id[1..]))),
            None
        );
        assert!(parse_cgroup("garbage\n").is_empty());
    }

    #[test]
    fn parses_stat_and_links() {
        assert_eq!(parse_stat_state("9 (a) b) Z 1 9 9 0"), Some('Z'));
        assert_eq!(
            parse_stat_ppid("123 (my (weird) proc) S 77 123 123 0"),
            Some(77)
        );
        assert_eq!(parse_stat_ppid("garbage"), None);
        let stat = "7 (x) y) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 8 9";
        assert_eq!(parse_stat_start_time(stat), Some(123_456));
        assert_eq!(parse_stat_start_time("7 (x) S 1 7"), None);
        assert_eq!(parse_socket_link("socket:[991]"), Some(991));
        assert_eq!(parse_socket_link("pipe:[991]"), None);
    }

    #[test]
    fn reads_this_process_from_real_proc() {
        let proc = Proc::default();
        let me = std::process::id();
        assert!(proc.exists(me));
        assert_eq!(proc.tgid(me), Some(me));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(proc.pids_listening_on(port).contains(&me));
        let socks = proc.open_sockets(me);
        assert!(socks.iter().any(|s| s
            .tcp
            .is_some_and(|t| t.local.port() == port && t.state == TCP_LISTEN)));
        assert!(proc.with_descendants(&BTreeSet::from([me])).contains(&me));
        assert!(proc.start_time(me).is_some_and(|t| t > 0));
        assert_eq!(proc.start_time(u32::MAX), None);
    }
}
