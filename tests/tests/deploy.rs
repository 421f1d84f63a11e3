//! The Kubernetes manifests grant what the tests prove enough, and no more, in every way they
//! can be rendered: the kustomize base, each overlay, and a user's overlay combining one with
//! both components. Each is rendered with `kubectl kustomize`, checked here, and validated
//! against the Kubernetes schemas with `kubernetes-validate --strict`.
//!
//! In every rendering the agent's capability list is the one the unprivileged e2e run holds
//! (`strike_tests::env::STRIKE_CAPS`), the pod is not privileged, its host mounts are
//! read-only, and its image is pinned to this release. The overlays' own parts are checked
//! against what they claim: GPU scheduling, a `ServiceMonitor` that selects a Service that
//! selects the agent, a collector that runs `deploy/collector/<backend>.yaml` unchanged with
//! every `${env:…}` it reads defined and every secret taken from a Secret by reference.
//!
//! Tools: `kubectl` (`STRIKE_KUBECTL`) and `kubernetes-validate` in the Python of
//! `STRIKE_PYTHON`, which `cargo xtask test` sets; else both from the venv `cargo xtask setup`
//! makes (`$STRIKE_CACHE/venv/bin`), else on `PATH`. Without them a test skips with the reason, and fails under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use serde::Deserialize as _;
use serde_json::{json, Value};
use strike_tests::env::{self, STRIKE_CAPS};

/// Kubernetes versions the renderings are validated against: an older release still run by
/// managed clusters (every field used here is GA by 1.26, `internalTrafficPolicy` the last)
/// and the newest schema `kubernetes-validate` ships.
const K8S_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

/// Kinds with no schema in `kubernetes-validate` (CRDs): checked field by field here.
const CRD_KINDS: &[(&str, &str)] = &[("ServiceMonitor", "monitoring.coreos.com/v1")];

/// What the agent's memory limit must hold besides `capture.buffers_mib` and
/// `capture.ring_mib`: the peak RSS the hostile-traffic e2e measured (61 MiB; 44 MiB idle)
/// and the processor's event queue (`event_queue_bytes`, 64 MiB, `strike-user/src/session`).
const MEASURED_PEAK_RSS_MIB: u64 = 61;
const EVENT_QUEUE_MIB: u64 = 64;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `name` in the bin directory of the venv `cargo xtask setup` makes (`$STRIKE_CACHE/venv`,
/// default `~/.cache/strike/venv`, as `xtask/src/ctx.rs` has it): the tools of a plain
/// `cargo test` run on a machine that was set up.
fn in_setup_venv(name: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("STRIKE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strike")))?;
    Some(cache.join("venv/bin").join(name)).filter(|p| p.is_file())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// How to run `kubernetes-validate`: a program and the arguments before its own.
struct Validator {
    program: PathBuf,
    args: Vec<&'static str>,
}

struct Tools {
    kubectl: PathBuf,
    validator: Validator,
}

fn find_validator() -> Result<Validator, String> {
    if let Some(python) = std::env::var_os("STRIKE_PYTHON").map(PathBuf::from) {
        let ok = Command::new(&python)
            .args(["-c", "import kubernetes_validate"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(Validator {
                program: python,
                args: vec!["-m", "kubernetes_validate"],
            });
        }
        return Err(format!(
            "STRIKE_PYTHON={} has no kubernetes_validate module (cargo xtask setup installs it)",
            python.display()
        ));
    }
    in_setup_venv("kubernetes-validate")
        .or_else(|| on_path("kubernetes-validate"))
        .map(|program| Validator {
            program,
            args: Vec::new(),
        })
        .ok_or_else(|| {
            "no kubernetes-validate: STRIKE_PYTHON is not set (cargo xtask test sets it), and none is in the setup venv or on PATH"
                .to_owned()
        })
}

/// The tools, or `None` after printing why (a failure under `CI=true`).
fn tools(test: &str) -> Option<Tools> {
    let mut problems = Vec::new();
    let kubectl = match std::env::var_os("STRIKE_KUBECTL") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => in_setup_venv("kubectl").or_else(|| on_path("kubectl")),
    };
    if kubectl.is_none() {
        problems.push("no kubectl (STRIKE_KUBECTL, else in the setup venv or on PATH)".to_owned());
    }
    let validator = find_validator().map_err(|e| problems.push(e)).ok();
    if let (Some(kubectl), Some(validator)) = (kubectl, validator) {
        Some(Tools { kubectl, validator })
    } else {
        env::skip(test, &problems.join("; "));
        None
    }
}

/// One rendering: its YAML and its documents.
struct Rendered {
    what: String,
    yaml: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name: &str) -> Result<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .with_context(|| format!("{}: no {kind} {name}", self.what))
    }

    fn agent(&self) -> Result<&Value> {
        self.one("DaemonSet", "strike")
    }
}

/// `kubectl kustomize dir`, parsed.
fn render(tools: &Tools, dir: &Path) -> Result<Rendered> {
    let what = dir
        .strip_prefix(repo())
        .unwrap_or(dir)
        .display()
        .to_string();
    let out = Command::new(&tools.kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", tools.kubectl.display()))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).context("kubectl's output is not UTF-8")?;
    let docs = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).context("parsing the rendering"))
        .collect::<Result<Vec<_>>>()?;
    ensure!(!docs.is_empty(), "{what} renders nothing");
    Ok(Rendered { what, yaml, docs })
}

/// `kubernetes-validate --strict` over the rendering, for each of [`K8S_VERSIONS`]: every
/// document must pass, but the [`CRD_KINDS`], which have no schema there.
fn validate(tools: &Tools, r: &Rendered) -> Result<()> {
    // A file, not stdin: the validator reads its input once per version.
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rendered-{}.yaml", r.what.replace(['/', '.'], "_")));
    std::fs::write(&file, &r.yaml).with_context(|| format!("writing {}", file.display()))?;
    let mut cmd = Command::new(&tools.validator.program);
    cmd.args(&tools.validator.args).arg("--strict");
    for v in K8S_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = cmd
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", tools.validator.program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("kubernetes-validate --strict {}:\n{stdout}", r.what);
    ensure!(
        out.status.success(),
        "{} does not validate ({}):\n{stdout}{}",
        r.what,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut passed = 0;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            passed += 1;
        } else if let Some(warn) = line.strip_prefix("WARN ") {
            let known = CRD_KINDS.iter().any(|(kind, api)| {
                warn.contains(&format!("for kind {kind} with api version {api} "))
            });
            ensure!(known, "{}: unexpected warning: {line}", r.what);
        } else {
            bail!("{}: unexpected validator output: {line}", r.what);
        }
    }
    let crds = r
        .docs
        .iter()
        .filter(|d| CRD_KINDS.iter().any(|(kind, _)| d["kind"] == *kind))
        .count();
    ensure!(
        passed == (r.docs.len() - crds) * K8S_VERSIONS.len(),
        "{}: {passed} passes for {} documents ({crds} CRDs) and {} versions",
        r.what,
        r.docs.len(),
        K8S_VERSIONS.len()
    );
    Ok(())
}

/// Renders `dir` (relative to the repository), validates it and checks the agent's
/// hardening; `None` when the tools are missing outside CI.
fn rendered(test: &str, dir: &str) -> Result<Option<Rendered>> {
    let Some(tools) = tools(test) else {
        return Ok(None);
    };
    let r = render(&tools, &repo().join(dir))?;
    validate(&tools, &r)?;
    agent_is_hardened(&r)?;
    Ok(Some(r))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn container<'a>(ds: &'a Value, name: &str) -> Result<&'a Value> {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no container {name}"))
}

fn env_var<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// `selector` (a `matchLabels` map) matches `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The agent's security context and mounts, as every rendering must keep them.
fn agent_is_hardened(r: &Rendered) -> Result<()> {
    let ds = r.agent()?;
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds, "strike")?;
    let sc = &c["securityContext"];
    let added: Vec<String> = strs(&sc["capabilities"]["add"])
        .into_iter()
        .map(str::to_ascii_lowercase)
        .collect();
    ensure!(
        added == STRIKE_CAPS,
        "{}: capabilities.add {added:?}, the tests hold {STRIKE_CAPS:?}",
        r.what
    );
    ensure!(sc["capabilities"]["drop"] == json!(["ALL"]));
    ensure!(
        sc["privileged"] == false,
        "privileged: {}",
        sc["privileged"]
    );
    ensure!(sc["allowPrivilegeEscalation"] == false);
    ensure!(sc["readOnlyRootFilesystem"] == true);
    ensure!(sc["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(
        pod["hostPID"] == true,
        "targets are found in the host's /proc"
    );
    ensure!(pod["hostNetwork"].is_null() && pod["hostIPC"].is_null());
    ensure!(pod["automountServiceAccountToken"] == false);
    // Every mount is read-only but the emptyDir ones (scratch space).
    let volumes = pod["volumes"].as_array().context("no volumes")?;
    let scratch: Vec<&str> = volumes
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .filter_map(|v| v["name"].as_str())
        .collect();
    for mount in c["volumeMounts"].as_array().context("no volumeMounts")? {
        let name = mount["name"].as_str().unwrap_or_default();
        ensure!(
            scratch.contains(&name) || mount["readOnly"] == true,
            "{}: {name} is mounted writable",
            r.what
        );
    }
    for v in volumes.iter().filter(|v| v.get("hostPath").is_some()) {
        let path = v["hostPath"]["path"].as_str().unwrap_or_default();
        ensure!(
            ["/sys/kernel/tracing", "/sys/fs/cgroup"].contains(&path),
            "{}: host path {path}",
            r.what
        );
    }
    let image = c["image"].as_str().context("no image")?;
    ensure!(
        image.rsplit_once(':').map(|(_, t)| t) == Some(env!("CARGO_PKG_VERSION")),
        "{}: image {image} is not tagged {}",
        r.what,
        env!("CARGO_PKG_VERSION")
    );
    // The metrics port stays fenced.
    let policy = r.one("NetworkPolicy", "strike-metrics")?;
    ensure!(
        policy["spec"]["podSelector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"],
        "the NetworkPolicy selects other pods than the DaemonSet's"
    );
    let ingress = policy["spec"]["ingress"]
        .as_array()
        .context("no ingress rules")?;
    ensure!(ingress.len() == 1, "{ingress:?}");
    ensure!(ingress[0]["ports"] == json!([{"port": "metrics", "protocol": "TCP"}]));
    ensure!(ingress[0]["from"][0].get("namespaceSelector").is_some());
    // No Secret is ever rendered: secrets are the user's, by reference.
    ensure!(r.all("Secret").is_empty(), "{}: renders a Secret", r.what);
    Ok(())
}

/// A Kubernetes quantity in MiB (`Mi` and `Gi` only: what these manifests use).
fn mib(quantity: &Value) -> Result<u64> {
    let q = quantity.as_str().context("not a quantity")?;
    if let Some(n) = q.strip_suffix("Mi") {
        return Ok(n.parse()?);
    }
    if let Some(n) = q.strip_suffix("Gi") {
        return Ok(n.parse::<u64>()? * 1024);
    }
    bail!("quantity {q}: not in Mi or Gi")
}

#[test]
fn the_base_renders_validated_and_its_limits_hold_the_budgets() -> Result<()> {
    let Some(r) = rendered(
        "the_base_renders_validated_and_its_limits_hold_the_budgets",
        "deploy/kubernetes/base",
    )?
    else {
        return Ok(());
    };
    let ds = r.agent()?;
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds, "strike")?;
    ensure!(
        c["image"] == format!("localhost/strike:{}", env!("CARGO_PKG_VERSION")),
        "image {}",
        c["image"]
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        ensure!(
            c[probe]["httpGet"] == json!({"path": "/healthz", "port": "metrics"}),
            "{probe}: {}",
            c[probe]
        );
    }
    // The exporter's shutdown waits at most 5 s for spans and 5 s for metrics, 1.2 s for the
    // transport: the grace period must cover that with room.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .context("no terminationGracePeriodSeconds")?;
    ensure!(grace >= 24, "terminationGracePeriodSeconds {grace}");
    // The memory limit holds the configured budgets (from the ConfigMap's strike.yaml) on
    // top of the measured peak.
    let config_name = pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "config"))
        .and_then(|v| v["configMap"]["name"].as_str())
        .context("no config volume")?;
    let config = r.one("ConfigMap", config_name)?;
    let strike_yaml: Value = serde_yaml_ng::from_str(
        config["data"]["strike.yaml"]
            .as_str()
            .context("no strike.yaml")?,
    )?;
    let buffers = strike_yaml["capture"]["buffers_mib"]
        .as_u64()
        .context("capture.buffers_mib")?;
    let ring = strike_yaml["capture"]["ring_mib"]
        .as_u64()
        .context("capture.ring_mib")?;
    let limit = mib(&c["resources"]["limits"]["memory"])?;
    let request = mib(&c["resources"]["requests"]["memory"])?;
    let budget = MEASURED_PEAK_RSS_MIB + buffers + EVENT_QUEUE_MIB + ring;
    ensure!(
        limit >= budget + budget / 5,
        "memory limit {limit} MiB: the budgets need {budget} MiB, plus 20% headroom"
    );
    ensure!(
        request >= MEASURED_PEAK_RSS_MIB && request <= limit,
        "memory request {request} MiB"
    );
    ensure!(
        c["resources"]["limits"].get("cpu").is_none(),
        "a CPU limit throttles the ring buffer's reader"
    );
    ensure!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
    // Not scheduled onto tainted GPU nodes by the base: that is components/gpu.
    ensure!(pod["tolerations"].is_null() && pod["nodeSelector"].is_null());
    Ok(())
}

fn gpu_scheduled(ds: &Value) -> Result<()> {
    let pod = &ds["spec"]["template"]["spec"];
    let name = &ds["metadata"]["name"];
    ensure!(
        pod["nodeSelector"] == json!({"nvidia.com/gpu.present": "true"}),
        "{name}: nodeSelector {}",
        pod["nodeSelector"]
    );
    ensure!(
        pod["tolerations"]
            == json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        "{name}: tolerations {}",
        pod["tolerations"]
    );
    Ok(())
}

#[test]
fn the_gpu_overlay_schedules_onto_gpu_nodes() -> Result<()> {
    let Some(r) = rendered(
        "the_gpu_overlay_schedules_onto_gpu_nodes",
        "deploy/kubernetes/overlays/gpu",
    )?
    else {
        return Ok(());
    };
    gpu_scheduled(r.agent()?)?;
    let c = container(r.agent()?, "strike")?;
    ensure!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
    Ok(())
}

/// The `ServiceMonitor` has what the CRD requires and what makes it scrape: it selects the
/// Service in its namespace, whose selector matches the agent's pods, on the port `metrics`
/// (9464, the container's), path `/metrics`.
fn scrapes_the_agent(r: &Rendered) -> Result<()> {
    let monitors = r.all("ServiceMonitor");
    ensure!(
        monitors.len() == 1,
        "{}: {} ServiceMonitors",
        r.what,
        monitors.len()
    );
    let sm = monitors[0];
    ensure!(sm["apiVersion"] == "monitoring.coreos.com/v1");
    ensure!(sm["metadata"]["name"].is_string() && sm["metadata"]["namespace"] == "strike");
    let spec = &sm["spec"];
    let services: Vec<&Value> = r
        .all("Service")
        .into_iter()
        .filter(|s| {
            s["metadata"]["namespace"] == "strike"
                && selects(&spec["selector"]["matchLabels"], &s["metadata"]["labels"])
        })
        .collect();
    ensure!(
        services.len() == 1,
        "the ServiceMonitor selects {} Services",
        services.len()
    );
    let svc = services[0];
    ensure!(strs(&spec["namespaceSelector"]["matchNames"]) == ["strike"]);
    let ds = r.agent()?;
    ensure!(
        selects(
            &svc["spec"]["selector"],
            &ds["spec"]["template"]["metadata"]["labels"]
        ),
        "the Service does not select the agent's pods"
    );
    ensure!(svc["spec"]["clusterIP"] == "None", "not headless");
    let endpoints = spec["endpoints"].as_array().context("no endpoints")?;
    ensure!(endpoints.len() == 1);
    let ep = &endpoints[0];
    ensure!(ep["path"] == "/metrics" && ep["port"] == "metrics", "{ep}");
    let port = svc["spec"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == ep["port"]))
        .context("the endpoint names no port of the Service")?;
    ensure!(port["port"] == 9464 && port["targetPort"] == "metrics");
    let container_port = container(ds, "strike")?["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "metrics"))
        .context("no container port metrics")?;
    ensure!(container_port["containerPort"] == 9464);
    // The CRD's enums and patterns for what is set.
    ensure!(["http", "https"].contains(&ep["scheme"].as_str().unwrap_or("http")));
    for duration in [&ep["interval"], &ep["scrapeTimeout"]] {
        if let Some(d) = duration.as_str() {
            ensure!(
                d.strip_suffix('s')
                    .is_some_and(|n| n.parse::<u32>().is_ok()),
                "duration {d}"
            );
        }
    }
    for relabel in ep["relabelings"].as_array().into_iter().flatten() {
        ensure!(relabel["action"] == "replace" && relabel["targetLabel"].is_string());
    }
    Ok(())
}

#[test]
fn the_servicemonitor_overlay_scrapes_the_agent() -> Result<()> {
    let Some(r) = rendered(
        "the_servicemonitor_overlay_scrapes_the_agent",
        "deploy/kubernetes/overlays/servicemonitor",
    )?
    else {
        return Ok(());
    };
    scrapes_the_agent(&r)
}

/// The `${env:NAME}` placeholders of a collector config.
fn env_placeholders(config: &str) -> BTreeSet<&str> {
    config
        .split("${env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// The overlay runs a node-local collector on `deploy/collector/<backend>.yaml` as it is,
/// reachable by the agent only, with its secrets from `secret` by reference.
fn exports_through_collector(r: &Rendered, backend: &str, secret: &str) -> Result<()> {
    let collector = r.one("DaemonSet", "strike-otel-collector")?;
    let c = container(collector, "otel-collector")?;
    let pod = &collector["spec"]["template"]["spec"];
    // Its config is the file beside the otelcol instructions, byte for byte.
    let config_map = pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "config"))
        .and_then(|v| v["configMap"]["name"].as_str())
        .context("no config volume")?;
    let config = r.one("ConfigMap", config_map)?["data"]["config.yaml"]
        .as_str()
        .context("no config.yaml")?;
    let file = std::fs::read_to_string(repo().join(format!("deploy/collector/{backend}.yaml")))?;
    ensure!(
        config == file,
        "{config_map} is not deploy/collector/{backend}.yaml"
    );
    let configs = r
        .all("ConfigMap")
        .into_iter()
        .filter(|m| m["data"].get("config.yaml").is_some())
        .count();
    ensure!(configs == 1, "{}: {configs} collector configs", r.what);
    // Rebound to the pod IP, and every variable the config reads is defined.
    ensure!(strs(&c["args"]).contains(
        &"--config=yaml:receivers::otlp::protocols::grpc::endpoint: ${env:MY_POD_IP}:4317"
    ));
    let placeholders = env_placeholders(&file);
    ensure!(!placeholders.is_empty());
    for name in placeholders.iter().copied().chain(["MY_POD_IP"]) {
        let var = env_var(c, name).with_context(|| format!("{backend}: {name} is not set"))?;
        if name != "MY_POD_IP" {
            ensure!(
                var.get("value").is_none() && var["valueFrom"]["secretKeyRef"]["name"] == secret,
                "{name} is not a reference to the Secret {secret}: {var}"
            );
        }
    }
    let sc = &c["securityContext"];
    ensure!(sc["privileged"] == false && sc["allowPrivilegeEscalation"] == false);
    ensure!(sc["readOnlyRootFilesystem"] == true && sc["runAsNonRoot"] == true);
    ensure!(sc["capabilities"] == json!({"drop": ["ALL"]}));
    ensure!(sc["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(pod["automountServiceAccountToken"] == false);
    let image = c["image"].as_str().context("no image")?;
    ensure!(
        image.starts_with("otel/opentelemetry-collector-contrib:"),
        "{image}: the configs need the contrib build, pinned"
    );
    // The agent sends to the node-local Service in front of it.
    let svc = r.one("Service", "strike-otel-collector")?;
    ensure!(svc["spec"]["internalTrafficPolicy"] == "Local");
    ensure!(selects(
        &svc["spec"]["selector"],
        &collector["spec"]["template"]["metadata"]["labels"]
    ));
    ensure!(svc["spec"]["ports"][0]["port"] == 4317);
    let endpoint = env_var(
        container(r.agent()?, "strike")?,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    .context("no OTEL_EXPORTER_OTLP_ENDPOINT")?;
    ensure!(
        endpoint["value"] == "http://strike-otel-collector.strike.svc:4317",
        "{endpoint}"
    );
    // Only the agent may send to it.
    let policy = r.one("NetworkPolicy", "strike-otel-collector")?;
    ensure!(
        policy["spec"]["podSelector"]["matchLabels"]
            == collector["spec"]["selector"]["matchLabels"]
    );
    ensure!(
        policy["spec"]["ingress"]
            == json!([{
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "strike"}}}],
                "ports": [{"port": "otlp-grpc", "protocol": "TCP"}],
            }]),
        "{}",
        policy["spec"]["ingress"]
    );
    Ok(())
}

#[test]
fn the_datadog_overlay_exports_through_a_node_local_collector() -> Result<()> {
    let Some(r) = rendered(
        "the_datadog_overlay_exports_through_a_node_local_collector",
        "deploy/kubernetes/overlays/datadog",
    )?
    else {
        return Ok(());
    };
    exports_through_collector(&r, "datadog", "strike-datadog")
}

#[test]
fn the_newrelic_overlay_exports_through_a_node_local_collector() -> Result<()> {
    let Some(r) = rendered(
        "the_newrelic_overlay_exports_through_a_node_local_collector",
        "deploy/kubernetes/overlays/newrelic",
    )?
    else {
        return Ok(());
    };
    exports_through_collector(&r, "newrelic", "strike-newrelic")
}

/// What a user writes to combine them: their own overlay of `overlays/datadog` with both
/// components, by relative paths (kustomize refuses absolute ones).
#[test]
fn an_overlay_combines_datadog_with_both_components() -> Result<()> {
    const TEST: &str = "an_overlay_combines_datadog_with_both_components";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kustomize-combined");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let up = "../".repeat(dir.components().count() - 1);
    let repo = repo().canonicalize()?;
    let rel = |p: &str| {
        format!(
            "{up}{}/{p}",
            repo.strip_prefix("/").unwrap_or(&repo).display()
        )
    };
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n  - {}\n",
            rel("deploy/kubernetes/overlays/datadog"),
            rel("deploy/kubernetes/components/gpu"),
            rel("deploy/kubernetes/components/servicemonitor"),
        ),
    )?;
    let Some(tools) = tools(TEST) else {
        return Ok(());
    };
    let r = render(&tools, &dir)?;
    validate(&tools, &r)?;
    agent_is_hardened(&r)?;
    exports_through_collector(&r, "datadog", "strike-datadog")?;
    scrapes_the_agent(&r)?;
    // The collector goes where the agent goes: the Service keeps OTLP on the node.
    gpu_scheduled(r.agent()?)?;
    gpu_scheduled(r.one("DaemonSet", "strike-otel-collector")?)?;
    Ok(())
}
