//! The session's clocks: kernel timestamps are `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`);
//! records are dated in wall-clock time with one offset read at the session's start.

/// Kernel `CLOCK_MONOTONIC` now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock minus monotonic, to turn kernel timestamps into dates.
pub fn clock_offset_ns() -> i64 {
    let real = i128::from(clock_ns(libc::CLOCK_REALTIME));
    let mono = i128::from(clock_ns(libc::CLOCK_MONOTONIC));
    i64::try_from(real - mono).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// RFC 3339, with nanoseconds, of a kernel monotonic timestamp dated with `offset_ns`.
pub fn wall_clock(mono_ns: u64, offset_ns: i64) -> String {
    let wall = i128::from(mono_ns).saturating_add(i128::from(offset_ns));
    time::OffsetDateTime::from_unix_timestamp_nanos(wall)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
