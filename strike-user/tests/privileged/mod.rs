//! Helpers of the privileged tests that run the real `strike` binary.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::{io::BufRead, process::Child};

/// A child process killed when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints why the test skips; under `CI=true` a skip is a failure instead.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run in CI: {reason}"
    );
    eprintln!("SKIP: {reason}");
}

/// Whether this process is root; skips (see [`skip`]) when not.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip("not root");
    false
}

/// One line, trimmed.
pub fn line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s.trim().to_string()
}
