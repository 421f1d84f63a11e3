//! Numeric conversions the stages share.

/// A count (tokens, bytes, nanoseconds, millijoules) as `f64`: exact below 2^53, which every
/// count Strike keeps stays far below.
#[expect(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^53; the one place this cast is made"
)]
pub fn u64_to_f64(v: u64) -> f64 {
    v as f64
}
