//! The Kubernetes manifest grants what the tests prove enough, and no more: its capability
//! list is the one the unprivileged e2e run holds (`strike_tests::env::STRIKE_CAPS`), the pod
//! is not privileged, its host mounts are read-only, and the image is pinned to this release.

use std::path::Path;

use anyhow::{ensure, Context as _, Result};
use serde::Deserialize as _;
use serde_json::Value;
use strike_tests::env::STRIKE_CAPS;

fn manifests() -> Result<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).context("parsing the manifest"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} in the manifest"))
}

#[test]
fn the_daemonset_holds_exactly_the_tested_capabilities() -> Result<()> {
    let docs = manifests()?;
    let ds = of_kind(&docs, "DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    let added: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .context("no capabilities.add")?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
        .collect();
    ensure!(
        added == STRIKE_CAPS,
        "capabilities.add {added:?}, the tests hold {STRIKE_CAPS:?}"
    );
    ensure!(sc["capabilities"]["drop"] == serde_json::json!(["ALL"]));
    ensure!(
        sc["privileged"] == false,
        "privileged: {}",
        sc["privileged"]
    );
    ensure!(sc["allowPrivilegeEscalation"] == false);
    ensure!(sc["readOnlyRootFilesystem"] == true);
    ensure!(sc["seccompProfile"]["type"] == "RuntimeDefault");
    // Every mount is read-only but the emptyDir ones (scratch space).
    let scratch: Vec<&str> = pod["volumes"]
        .as_array()
        .context("no volumes")?
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .filter_map(|v| v["name"].as_str())
        .collect();
    for mount in container["volumeMounts"]
        .as_array()
        .context("no volumeMounts")?
    {
        let name = mount["name"].as_str().unwrap_or_default();
        ensure!(
            scratch.contains(&name) || mount["readOnly"] == true,
            "{name} is mounted writable"
        );
    }
    Ok(())
}

#[test]
fn the_image_is_this_release_and_the_endpoint_is_fenced() -> Result<()> {
    let docs = manifests()?;
    let ds = of_kind(&docs, "DaemonSet")?;
    let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .context("no image")?;
    let tag = image.rsplit_once(':').map(|(_, t)| t);
    ensure!(
        tag == Some(env!("CARGO_PKG_VERSION")),
        "image {image}: not tagged {}",
        env!("CARGO_PKG_VERSION")
    );
    let policy = of_kind(&docs, "NetworkPolicy")?;
    ensure!(
        policy["spec"]["podSelector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"],
        "the NetworkPolicy selects other pods than the DaemonSet's"
    );
    let ingress = policy["spec"]["ingress"]
        .as_array()
        .context("no ingress rules")?;
    ensure!(ingress.len() == 1, "{ingress:?}");
    ensure!(ingress[0]["ports"] == serde_json::json!([{"port": "metrics", "protocol": "TCP"}]));
    ensure!(ingress[0]["from"][0].get("namespaceSelector").is_some());
    Ok(())
}
