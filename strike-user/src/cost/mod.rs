//! Cost stage: what each request cost in GPU time, energy and money.
//!
//! [`CostConfig`] is the price list (GPU $/hour by product, energy $/kWh and PUE, optional
//! per-token prices for chargeback) and the work weights; [`ledger::Ledger`] shares each
//! device's measured interval among the requests in flight on it and keeps the rest as idle
//! cost, so that attributed + idle = measured, always.

pub mod ledger;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prices and weights (the `cost` section of `strike run`'s configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostConfig {
    /// GPU price per hour by product name: a key matches when its words appear, in order
    /// and whole, in the device name (case-insensitive: `H100` matches
    /// `NVIDIA H100 80GB HBM3`, `L4` does not match `NVIDIA L40S`); the longest matching key
    /// wins. `{"H100": 2.49, "A100": 1.29}`.
    pub gpu_price_per_hour: BTreeMap<String, f64>,
    /// Price per hour of a GPU no key matches.
    pub default_gpu_price_per_hour: f64,
    /// Energy price, $/kWh.
    pub energy_price_per_kwh: f64,
    /// Power usage effectiveness of the site: facility energy / IT energy (≥ 1).
    pub pue: f64,
    /// Work of one prompt (prefill) token, relative to `decode_weight`.
    pub prefill_weight: f64,
    /// Work of one generated (decode) token.
    pub decode_weight: f64,
    /// Per-token prices for chargeback (`chargeback_usd`), when set.
    pub token_prices: Option<TokenPrices>,
    /// Request header naming the tenant (`x-tenant-id`), when set.
    pub tenant_header: Option<String>,
    /// A file holding the deployment's secret for `api_key_hash` (at least 16 bytes; a
    /// mounted Kubernetes Secret). Without one each process draws its own, and hashes hold
    /// for that process only.
    pub api_key_hash_key_file: Option<std::path::PathBuf>,
    /// Seconds a record may wait for the requests that overlapped it to finish before its
    /// cost is settled with what is known.
    pub max_hold_s: f64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            gpu_price_per_hour: BTreeMap::new(),
            default_gpu_price_per_hour: 0.0,
            energy_price_per_kwh: 0.0,
            pue: 1.0,
            prefill_weight: 1.0,
            decode_weight: 1.0,
            token_prices: None,
            tenant_header: None,
            api_key_hash_key_file: None,
            max_hold_s: 120.0,
        }
    }
}

/// Per-token prices, $ per million tokens, with optional tiers by prompt size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenPrices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Cached prompt tokens; `None`: priced as input.
    pub cached_input_per_mtok: Option<f64>,
    /// Tiers by prompt size: the tier with the largest `min_prompt_tokens` not above the
    /// request's input tokens replaces the base prices.
    pub tiers: Vec<PriceTier>,
}

impl Default for TokenPrices {
    fn default() -> Self {
        Self {
            input_per_mtok: 0.0,
            output_per_mtok: 0.0,
            cached_input_per_mtok: None,
            tiers: Vec::new(),
        }
    }
}

/// Prices from a prompt size on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub min_prompt_tokens: u64,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
}

impl CostConfig {
    /// $/hour of a device by its product name.
    pub fn gpu_price_per_hour(&self, device_name: &str) -> f64 {
        let name = words(device_name);
        self.gpu_price_per_hour
            .iter()
            .filter(|(k, _)| {
                let key = words(k);
                !key.is_empty() && name.windows(key.len()).any(|w| w == key.as_slice())
            })
            .max_by_key(|(k, _)| k.len())
            .map_or(self.default_gpu_price_per_hour, |(_, v)| *v)
    }

    /// The cost of `seconds` of a device plus `energy_j` joules at the wall (× PUE).
    pub fn interval_cost(&self, device_name: &str, seconds: f64, energy_j: f64) -> f64 {
        seconds * self.gpu_price_per_hour(device_name) / 3600.0
            + energy_j * self.pue / 3.6e6 * self.energy_price_per_kwh
    }

    /// The chargeback price of a request's tokens, when token prices are set.
    pub fn chargeback_usd(
        &self,
        input: Option<u64>,
        cached: Option<u64>,
        output: Option<u64>,
    ) -> Option<f64> {
        let p = self.token_prices.as_ref()?;
        if input.is_none() && output.is_none() {
            return None;
        }
        let input = input.unwrap_or(0);
        let (in_p, out_p, cached_p) = p
            .tiers
            .iter()
            .filter(|t| t.min_prompt_tokens <= input)
            .max_by_key(|t| t.min_prompt_tokens)
            .map_or(
                (p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok),
                |t| (t.input_per_mtok, t.output_per_mtok, t.cached_input_per_mtok),
            );
        let cached = cached.unwrap_or(0).min(input);
        let tokens = |n: u64| crate::num::u64_to_f64(n) / 1e6;
        Some(
            tokens(input - cached) * in_p
                + tokens(cached) * cached_p.unwrap_or(in_p)
                + tokens(output.unwrap_or(0)) * out_p,
        )
    }
}

/// Lower-case alphanumeric words.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// What a session says when its `api_key_hash` secret is its own.
pub const RANDOM_KEY_NOTE: &str = "strike: api_key_hash: no cost.api_key_hash_key_file, so a secret of this process's own: hashes change when it restarts";

/// The hasher of API keys the configuration asks for: keyed with the secret in
/// `api_key_hash_key_file` (its bytes, surrounding whitespace trimmed), or a random one of
/// this process's when none is set ([`RANDOM_KEY_NOTE`] says so).
///
/// # Errors
/// The file cannot be read, or holds fewer than 16 bytes.
pub fn key_hasher(
    config: &CostConfig,
) -> anyhow::Result<std::sync::Arc<strike_parse::protocol::http::KeyHasher>> {
    use strike_parse::protocol::http::KeyHasher;
    let Some(path) = &config.api_key_hash_key_file else {
        return Ok(std::sync::Arc::new(KeyHasher::random()));
    };
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cost.api_key_hash_key_file: reading {}: {e}",
            path.display()
        )
    })?;
    let secret = bytes.trim_ascii();
    KeyHasher::new(secret)
        .map(std::sync::Arc::new)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cost.api_key_hash_key_file: {} holds {} bytes, at least {} are needed",
                path.display(),
                secret.len(),
                KeyHasher::MIN_SECRET
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hasher_is_the_files_or_the_processs_own() {
        let dir = std::env::temp_dir().join(format!("strike-keyhash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("key");
        std::fs::write(&good, "  a secret of thirty-two bytes or so\n").unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        let with = |f: Option<&std::path::Path>| CostConfig {
            api_key_hash_key_file: f.map(std::path::Path::to_path_buf),
            ..CostConfig::default()
        };
        let a = key_hasher(&with(Some(&good))).unwrap();
        let b = key_hasher(&with(Some(&good))).unwrap();
        assert!(!a.is_random());
        assert_eq!(a.hash("sk-1"), b.hash("sk-1"), "one file, one hash");
        assert!(key_hasher(&with(None)).unwrap().is_random());
        let e = key_hasher(&with(Some(&short))).unwrap_err().to_string();
        assert!(e.contains("holds 4 bytes, at least 16"), "{e}");
        let e = key_hasher(&with(Some(&dir.join("absent"))))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cost.api_key_hash_key_file: reading"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prices_by_device_and_tokens() {
        let c = CostConfig {
            gpu_price_per_hour: [
                ("H100".to_owned(), 2.0),
                ("H100 80GB".to_owned(), 3.0),
                ("A100".to_owned(), 1.0),
            ]
            .into(),
            default_gpu_price_per_hour: 0.5,
            energy_price_per_kwh: 0.10,
            pue: 1.5,
            token_prices: Some(TokenPrices {
                input_per_mtok: 1.0,
                output_per_mtok: 4.0,
                cached_input_per_mtok: Some(0.5),
                tiers: vec![PriceTier {
                    min_prompt_tokens: 1000,
                    input_per_mtok: 2.0,
                    output_per_mtok: 8.0,
                    cached_input_per_mtok: None,
                }],
            }),
            ..CostConfig::default()
        };
        assert!(
            (c.gpu_price_per_hour("NVIDIA H100 80GB HBM3") - 3.0).abs() < 1e-12,
            "longest key"
        );
        assert!((c.gpu_price_per_hour("nvidia h100 pcie") - 2.0).abs() < 1e-12);
        assert!((c.gpu_price_per_hour("Tesla T4") - 0.5).abs() < 1e-12);
        let l4 = CostConfig {
            gpu_price_per_hour: [("L4".to_owned(), 0.8)].into(),
            ..CostConfig::default()
        };
        assert!((l4.gpu_price_per_hour("NVIDIA L4") - 0.8).abs() < 1e-12);
        assert!(
            l4.gpu_price_per_hour("NVIDIA L40S").abs() < 1e-12,
            "whole words only"
        );
        // 1 h of an A100 ($1) + 3.6 MJ (1 kWh) × 1.5 × $0.10.
        assert!((c.interval_cost("A100-SXM4", 3600.0, 3.6e6) - 1.15).abs() < 1e-12);
        // 100 input (20 cached) and 10 output tokens, base tier.
        let base = c.chargeback_usd(Some(100), Some(20), Some(10)).unwrap();
        assert!(
            (base - (80.0 * 1.0 + 20.0 * 0.5 + 10.0 * 4.0) / 1e6).abs() < 1e-15,
            "{base}"
        );
        // 2000 input tokens: the tier, whose cached price falls back to its input price.
        let tier = c.chargeback_usd(Some(2000), Some(1000), Some(10)).unwrap();
        assert!(
            (tier - (2000.0 * 2.0 + 10.0 * 8.0) / 1e6).abs() < 1e-15,
            "{tier}"
        );
        assert_eq!(c.chargeback_usd(None, None, None), None);
        assert_eq!(
            CostConfig::default().chargeback_usd(Some(1), None, Some(1)),
            None
        );
    }
}
