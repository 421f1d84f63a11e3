//! Bounds on the label values of metric points: captured bytes choose them, so each label
//! admits a bounded number of distinct values, and the model names the server reports come
//! before the ones clients choose. A value past the bound is exported as [`OVERFLOW`] and
//! counted (`ExportStats::label_overflows`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// What a label's value reads once its distinct values are used up.
pub const OVERFLOW: &str = "_other";
/// Distinct values of one label.
pub const MAX_VALUES: usize = 128;
/// Of those, values no server reported (a client's `model`, a tenant header), beyond which
/// only values already admitted or reported by a server are.
pub const MAX_CLIENT_VALUES: usize = 32;
/// Longest value, in characters.
pub const MAX_LEN: usize = 128;

/// Where a label value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The server's response (`model` it answered with).
    Server,
    /// The client's request (`model` asked for, a tenant header).
    Client,
}

#[derive(Debug, Default)]
struct Seen {
    values: HashSet<String>,
    client: usize,
}

/// The admitted values of each label.
#[derive(Debug, Default)]
pub struct LabelLimiter {
    seen: Mutex<HashMap<&'static str, Seen>>,
}

impl LabelLimiter {
    /// The value to export for `key`: `value` itself (bounded in length, control characters
    /// replaced) while the label has room for it, else [`OVERFLOW`]; `true` with it when
    /// it overflowed.
    pub fn admit(&self, key: &'static str, value: &str, origin: Origin) -> (String, bool) {
        let value: String = value
            .chars()
            .take(MAX_LEN)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let s = seen.entry(key).or_default();
        if s.values.contains(&value) {
            return (value, false);
        }
        let room = s.values.len() < MAX_VALUES
            && (origin == Origin::Server || s.client < MAX_CLIENT_VALUES);
        if !room {
            return (OVERFLOW.to_owned(), true);
        }
        if origin == Origin::Client {
            s.client += 1;
        }
        s.values.insert(value.clone());
        (value, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_client_values_are_bounded_server_values_first() {
        let l = LabelLimiter::default();
        for i in 0..MAX_CLIENT_VALUES {
            assert_eq!(
                l.admit("m", &format!("client-{i}"), Origin::Client),
                (format!("client-{i}"), false)
            );
        }
        // The client quota is spent: a new client value overflows, a known one does not.
        assert_eq!(
            l.admit("m", "client-new", Origin::Client),
            (OVERFLOW.to_owned(), true)
        );
        assert!(!l.admit("m", "client-3", Origin::Client).1);
        // A server's model names still get in, up to the label's bound, and a client asking
        // for one the server reported is that value.
        assert_eq!(
            l.admit("m", "llama-3-8b", Origin::Server),
            ("llama-3-8b".to_owned(), false)
        );
        assert!(!l.admit("m", "llama-3-8b", Origin::Client).1);
        for i in 0..MAX_VALUES {
            l.admit("m", &format!("served-{i}"), Origin::Server);
        }
        assert_eq!(
            l.admit("m", "one-more", Origin::Server),
            (OVERFLOW.to_owned(), true)
        );
        // Labels are bounded apart, and values in length and charset.
        let (v, over) = l.admit(
            "tenant",
            &format!("a\nb{}", "x".repeat(70_000)),
            Origin::Client,
        );
        assert!(!over);
        assert_eq!(v.chars().count(), MAX_LEN);
        assert!(v.starts_with("a\u{fffd}b"));
    }
}
