//! `cargo xtask image`: the container image, from Debian packages only.
//!
//! 1. podman and mmdebstrap from apt (root, Debian), if missing;
//! 2. two base images made by mmdebstrap from this machine's Debian sources and imported
//!    into podman: the builder (the eBPF recipe's packages) and the runtime (libc6 and
//!    libgcc-s1, nothing else). Each is tagged with a hash of its recipe and reused while
//!    the recipe stays the same;
//! 3. `podman build` of `deploy/container/Containerfile`, tagged `localhost/strike:VERSION`
//!    and `localhost/strike:VERSION-REVISION`; the debug info of the stripped binary is
//!    exported beside it, to `target/image/`;
//! 4. `target/image/seccomp.json`: podman's default seccomp profile with `bpf(2)` and
//!    `perf_event_open(2)` allowed with `CAP_BPF` and `CAP_PERFMON` (podman's allows them
//!    only with `CAP_SYS_ADMIN`; Docker's and containerd's defaults have these rules);
//! 5. a summary line (size, layers, build time) and `target/image/MANIFEST`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use crate::ctx::{output, run, secs, Ctx};

/// The workspace version: the release tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REPOSITORY: &str = "localhost/strike";
const CONTAINERFILE: &str = "deploy/container/Containerfile";
const IGNOREFILE: &str = "deploy/container/containerignore";
const SUITE: &str = "bookworm";
/// Debian's CA bundle, the build host's trust store.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A base image made by mmdebstrap.
struct Base {
    /// `localhost/strike-NAME`.
    name: &'static str,
    variant: &'static str,
    packages: &'static [&'static str],
    /// Run on the tree (`$1`) before it is packed.
    hooks: &'static [&'static str],
}

/// Debian bookworm with the verified eBPF recipe (`shared/ebpf-toolchain.md`): Debian's Rust
/// 1.96 with its library source and cargo, LLVM 22 for bpf-linker, a C compiler for the
/// crates that build C (zstd).
const BUILDER: Base = Base {
    name: "strike-builder",
    variant: "apt",
    packages: &[
        "ca-certificates",
        "gcc",
        "libc6-dev",
        "binutils",
        "rustc-web",
        "cargo-web",
        "rust-web-src",
        "llvm-22-dev",
        "libpolly-22-dev",
        "clang-22",
    ],
    hooks: &[],
};

/// The runtime: the two libraries `strike` links (glibc, `libgcc_s`) and nothing to run but
/// `strike` itself: no shell, no package manager. NVML's library comes from the node's driver
/// (the NVIDIA container runtime mounts it).
const RUNTIME: Base = Base {
    name: "strike-base",
    // Unpacked only: no maintainer scripts (and so no dpkg or shell needed in the image).
    variant: "extract",
    packages: &["base-files", "libc6", "libgcc-s1"],
    hooks: &[
        r#"printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$1/etc/passwd""#,
        r#"printf 'root:x:0:\nnogroup:x:65534:\n' > "$1/etc/group""#,
        r#"rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/lintian" "$1/usr/share/locale" "$1/var/cache/apt" "$1/var/lib/apt""#,
        r#"mkdir -p "$1/tmp" "$1/root" && chmod 1777 "$1/tmp""#,
    ],
};

impl Base {
    /// The tag: the suite and a hash of the recipe, so a changed recipe is a new image.
    fn tag(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.variant);
        for p in self.packages {
            h.update([0]);
            h.update(p);
        }
        for hook in self.hooks {
            h.update([1]);
            h.update(hook);
        }
        let hex = h.finalize().iter().take(6).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        format!("localhost/{}:{SUITE}-{hex}", self.name)
    }
}

/// What `cargo xtask image` built.
#[derive(Debug)]
pub struct Built {
    /// `localhost/strike:VERSION-REVISION`: the exact build.
    pub image: String,
    /// `target/image/seccomp.json` (see [`seccomp_profile`]).
    pub seccomp: PathBuf,
}

/// `--save`: also write the image as an OCI archive (for `ctr images import`, `kind load`).
pub fn run_image(ctx: &Ctx, save: bool) -> Result<Built> {
    let total = Instant::now();
    crate::setup::apt_ensure("image tools", &["podman", "mmdebstrap", "runc"])?;
    let out_dir = ctx.target.join("image");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let sources = debian_sources()?;
    let t = Instant::now();
    let builder = base_image(ctx, &BUILDER, &sources, &out_dir)?;
    let runtime = base_image(ctx, &RUNTIME, &sources, &out_dir)?;
    let bases_s = t.elapsed().as_secs_f64();

    let rev = revision(ctx)?;
    let created = output(ctx.cmd("git").args(["log", "-1", "--format=%cI"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let exact = format!("{REPOSITORY}:{VERSION}-{rev}");
    let release = format!("{REPOSITORY}:{VERSION}");
    let mounts = build_mounts(ctx)?;
    let build = |target: &str| {
        let mut cmd = ctx.cmd("podman");
        cmd.args(["build", "--pull=never", "--network=host", "--format=docker"])
            .args(runtime_flags())
            .args(&mounts)
            .args(["--file", CONTAINERFILE, "--ignorefile", IGNOREFILE])
            .args(["--target", target])
            .arg(format!("--build-arg=BUILDER={builder}"))
            .arg(format!("--build-arg=BASE={runtime}"))
            .arg(format!("--build-arg=VERSION={VERSION}"))
            .arg(format!("--build-arg=REVISION={rev}"))
            .arg(format!("--build-arg=CREATED={created}"));
        // The same labels again as flags: buildah 1.28 reuses a cached `LABEL k="${ARG}"`
        // step when only the ARG changed (the image of a new commit with an unchanged
        // binary kept the old revision: the image test caught it); a `--label` is applied
        // by a last step of its own, never cached.
        for (key, value) in [
            ("version", VERSION),
            ("revision", rev.as_str()),
            ("created", created.as_str()),
            ("base.name", runtime.as_str()),
        ] {
            cmd.arg(format!("--label=org.opencontainers.image.{key}={value}"));
        }
        cmd
    };
    println!("image: building {exact} (a cold build compiles bpf-linker and strike: minutes) ...");
    let t = Instant::now();
    run(build("runtime")
        .args(["--tag", &exact, "--tag", &release])
        .arg("."))?;
    let build_s = t.elapsed().as_secs_f64();

    // The debug info, from the same (cached) build stage.
    let debug_dir = out_dir.join("debug");
    let _ = std::fs::remove_dir_all(&debug_dir);
    run(build("debug")
        .arg(format!("--output=type=local,dest={}", debug_dir.display()))
        .arg("."))?;
    let debug = out_dir.join(format!("strike-{VERSION}-{rev}.debug"));
    std::fs::rename(debug_dir.join("strike.debug"), &debug)
        .with_context(|| format!("moving the debug info to {}", debug.display()))?;
    let _ = std::fs::remove_dir_all(&debug_dir);

    let (id, size, layers) = inspect(ctx, &exact)?;
    let debug_mb = megabytes(debug.metadata().map_or(0, |m| m.len()));
    let mut manifest = format!(
        "image {exact}\nalso {release}\nid {id}\nsize_bytes {size}\nlayers {layers}\n\
         builder {builder}\nbase {runtime}\ndebug {}\nbuild_s {build_s:.1}\nbases_s {bases_s:.1}\n",
        debug.display()
    );
    if save {
        let archive = out_dir.join(format!("strike-{VERSION}-{rev}.oci.tar"));
        let _ = std::fs::remove_file(&archive);
        run(ctx
            .cmd("podman")
            .args(["save", "--format", "oci-archive", "--output"])
            .arg(&archive)
            .arg(&exact))?;
        let _ = writeln!(manifest, "archive {}", archive.display());
        println!("image: saved {}", archive.display());
    }
    let seccomp = seccomp_profile(&out_dir)?;
    let _ = writeln!(manifest, "seccomp {}", seccomp.display());
    std::fs::write(out_dir.join("MANIFEST"), &manifest)?;
    println!(
        "image: {exact} (also {release}): {:.1} MB, {layers} layers, built in {build_s:.1} s \
         (base images {bases_s:.1} s), total {}; debug info {debug_mb:.1} MB in {}",
        megabytes(size),
        secs(total),
        debug.display()
    );
    Ok(Built {
        image: exact,
        seccomp,
    })
}

/// podman's default seccomp profile (containers-common).
pub const PODMAN_SECCOMP: &str = "/usr/share/containers/seccomp.json";
/// The syscalls Strike needs that podman's profile allows only with `CAP_SYS_ADMIN`, and the
/// capability each is allowed with in Docker's (23.0 and later) and containerd's (1.6.x and
/// later) defaults.
const SECCOMP_BY_CAP: [(&str, &str); 2] = [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")];

/// `target/image/seccomp.json`: podman's default profile with `bpf(2)` allowed to a
/// container holding `CAP_BPF` and `perf_event_open(2)` to one holding `CAP_PERFMON`, as
/// Docker's and containerd's defaults have them; everything else as podman has it.
fn seccomp_profile(out_dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(PODMAN_SECCOMP)
        .with_context(|| format!("reading podman's seccomp profile {PODMAN_SECCOMP}"))?;
    let mut profile: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{PODMAN_SECCOMP} is not JSON"))?;
    let rules = profile["syscalls"]
        .as_array_mut()
        .with_context(|| format!("{PODMAN_SECCOMP} has no syscalls list"))?;
    allow_with_caps(rules);
    let path = out_dir.join("seccomp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&profile)?)?;
    Ok(path)
}

/// Drops [`SECCOMP_BY_CAP`]'s syscalls from the rules that deny them (a deny rule would win
/// over an allow rule of the same syscall) and appends one allow rule each, with its
/// capability.
fn allow_with_caps(rules: &mut Vec<serde_json::Value>) {
    let denies = |rule: &serde_json::Value| rule["action"] != "SCMP_ACT_ALLOW";
    for rule in rules.iter_mut().filter(|r| denies(r)) {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !SECCOMP_BY_CAP.iter().any(|(s, _)| n == s));
        }
    }
    rules.retain(|r| !r["names"].as_array().is_some_and(Vec::is_empty));
    for (syscall, cap) in SECCOMP_BY_CAP {
        rules.push(serde_json::json!({
            "names": [syscall],
            "action": "SCMP_ACT_ALLOW",
            "args": [],
            "comment": format!("Strike: {syscall} with {cap} (as Docker's and containerd's defaults)"),
            "includes": { "caps": [cap] },
            "excludes": {}
        }));
    }
}

/// `bytes` in MB (10^6), for messages.
fn megabytes(bytes: u64) -> f64 {
    // Sizes of images and files: far below 2^52.
    #[expect(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / 1e6
}

/// podman flags for this host: runc, which handles a hybrid cgroup v1/v2 hierarchy (crun
/// 1.8 refuses one: this CI VM has one), and the process's own `NOFILE`/`NPROC` hard limits
/// instead of podman's default 1048576, which a root without `CAP_SYS_RESOURCE` (also this
/// VM) cannot set. `cargo xtask test` hands them to the image tests (`STRIKE_PODMAN_FLAGS`).
pub fn runtime_flags() -> Vec<String> {
    let hard = |resource| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given and has no other effect.
        let ok = unsafe { libc::getrlimit(resource, &raw mut lim) } == 0;
        if ok {
            lim.rlim_max
        } else {
            1024
        }
    };
    // NPROC: podman's own processes run under a lower limit than the caller's hard one.
    let nofile = hard(libc::RLIMIT_NOFILE).min(1 << 20);
    let nproc = hard(libc::RLIMIT_NPROC).min(32_768);
    vec![
        "--runtime=runc".to_owned(),
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// The build host's trust store (a TLS-inspecting proxy's CA reaches crates.io's downloads
/// too) and cargo's download cache, mounted into every RUN step, never into a layer.
fn build_mounts(ctx: &Ctx) -> Result<Vec<String>> {
    let registry = ctx.cargo_bin.with_file_name("registry");
    std::fs::create_dir_all(&registry)
        .with_context(|| format!("creating {}", registry.display()))?;
    let mut mounts = vec![format!(
        "--volume={}:/usr/local/cargo/registry",
        registry.display()
    )];
    if Path::new(CA_BUNDLE).is_file() {
        mounts.push(format!("--volume={CA_BUNDLE}:{CA_BUNDLE}:ro"));
    }
    Ok(mounts)
}

/// The image's id, size in bytes and number of layers.
fn inspect(ctx: &Ctx, image: &str) -> Result<(String, u64, String)> {
    let text = output(ctx.cmd("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Size}} {{len .RootFS.Layers}}",
        image,
    ]))?;
    let mut fields = text.split_whitespace();
    Ok((
        fields.next().unwrap_or("?").to_owned(),
        fields
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0),
        fields.next().unwrap_or("?").to_owned(),
    ))
}

/// The git revision (12 hex digits), `-dirty` when the tree has uncommitted changes: the tag
/// names exactly what was built.
fn revision(ctx: &Ctx) -> Result<String> {
    let rev = output(ctx.cmd("git").args(["rev-parse", "--short=12", "HEAD"]))
        .context("the image tag needs the git revision")?
        .trim()
        .to_owned();
    let dirty = !output(
        ctx.cmd("git")
            .args(["status", "--porcelain", "--untracked-files=no"]),
    )?
    .trim()
    .is_empty();
    Ok(if dirty { format!("{rev}-dirty") } else { rev })
}

/// This machine's apt sources for the suite (the mirrors mmdebstrap reads), or
/// `$STRIKE_DEBIAN_SOURCES` (a sources.list or deb822 file).
fn debian_sources() -> Result<Vec<PathBuf>> {
    if let Some(p) = std::env::var_os("STRIKE_DEBIAN_SOURCES") {
        return Ok(vec![PathBuf::from(p)]);
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    let found: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str());
            matches!(ext, Some("list" | "sources"))
                && std::fs::read_to_string(p).is_ok_and(|t| {
                    t.lines()
                        .any(|l| !l.trim_start().starts_with('#') && l.contains(SUITE))
                })
        })
        .collect();
    if found.is_empty() {
        bail!("no apt source for Debian {SUITE} in /etc/apt (set STRIKE_DEBIAN_SOURCES to one)");
    }
    Ok(found)
}

/// The base image `base`, made by mmdebstrap and imported unless its tag exists already.
fn base_image(ctx: &Ctx, base: &Base, sources: &[PathBuf], out_dir: &Path) -> Result<String> {
    let tag = base.tag();
    let t = Instant::now();
    if ctx
        .cmd("podman")
        .args(["image", "exists", &tag])
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("image: base {tag} present");
        return Ok(tag);
    }
    let tar = out_dir.join(format!("{}.tar", base.name));
    println!(
        "image: base {tag}: mmdebstrap --variant={} {} ...",
        base.variant,
        base.packages.join(",")
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", base.variant))
        .arg(format!("--include={}", base.packages.join(",")))
        .arg("--format=tar")
        .stdin(std::process::Stdio::null());
    for hook in base.hooks {
        cmd.arg(format!("--customize-hook={hook}"));
    }
    cmd.arg(SUITE).arg(&tar).args(sources);
    run(&mut cmd)?;
    run(ctx
        .cmd("podman")
        .args(["import", "--message"])
        .arg(format!(
            "mmdebstrap --variant={} --include={} {SUITE}",
            base.variant,
            base.packages.join(",")
        ))
        .arg(&tar)
        .arg(&tag))?;
    let _ = std::fs::remove_file(&tar);
    // The Containerfile's defaults name the bases without the hash.
    let plain = tag
        .split_once(&format!(":{SUITE}-"))
        .map_or_else(|| tag.clone(), |(repo, _)| format!("{repo}:{SUITE}"));
    run(ctx.cmd("podman").args(["tag", &tag, &plain]))?;
    println!("image: base {tag} made ({})", secs(t));
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_allows_bpf_and_perf_event_open_with_their_capabilities() {
        // The two rules of podman's profile (containers-common 0.50) that name them.
        let mut rules = vec![
            serde_json::json!({"names": ["bpf", "perf_event_open", "setns"], "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_SYS_ADMIN"]}}),
            serde_json::json!({"names": ["bpf", "perf_event_open", "setns"], "action": "SCMP_ACT_ERRNO",
                "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "errnoRet": 1}),
            serde_json::json!({"names": ["bpf"], "action": "SCMP_ACT_ERRNO"}),
        ];
        allow_with_caps(&mut rules);
        assert_eq!(rules.len(), 4, "{rules:#?}");
        assert_eq!(
            rules[0]["names"],
            serde_json::json!(["bpf", "perf_event_open", "setns"])
        );
        assert_eq!(rules[1]["names"], serde_json::json!(["setns"]));
        assert_eq!(rules[2]["names"], serde_json::json!(["bpf"]));
        assert_eq!(rules[2]["includes"]["caps"], serde_json::json!(["CAP_BPF"]));
        assert_eq!(rules[3]["names"], serde_json::json!(["perf_event_open"]));
        assert_eq!(
            rules[3]["includes"]["caps"],
            serde_json::json!(["CAP_PERFMON"])
        );
    }
}
