//! Failing fast instead of running out of memory (issue #6, SPEC §2 "Memory").
//!
//! Rust aborts the whole process when an allocation fails, and on Linux a large allocation can
//! instead succeed and get the process killed later by the OOM killer. Neither may happen to a
//! Python user, so every call estimates its large buffers from the shapes *before* allocating them
//! ([`ensure_fits`]) and fails with [`CoreError::OutOfMemory`] (Python `MemoryError`) when they
//! exceed the memory the process can get:
//!
//! - `GSC_CORE_MAX_MEMORY` (bytes; `k`/`M`/`G` suffixes allowed, powers of 1024) when set: an
//!   explicit budget, e.g. for a container or a shared machine;
//! - otherwise the smallest of `MemAvailable` in `/proc/meminfo`, the cgroup v2 limit's headroom
//!   (`memory.max - memory.current`) and the address-space limit's (`ulimit -v` minus `VmSize`),
//!   on Linux; no limit where none is known.
//!
//! Requests under 8 MiB are always allowed.

use crate::error::{CoreError, Result};

/// A byte count as people read it.
pub fn human(bytes: u128) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.1} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{bytes} bytes")
    }
}

/// Parses `GSC_CORE_MAX_MEMORY`: a number of bytes, optionally with a `k`, `M`, `G` or `T` suffix
/// (powers of 1024; a trailing `B`/`iB` is ignored).
pub fn parse_budget(text: &str) -> Option<u128> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t)
        .trim();
    let (num, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1u128 << 10),
        'm' | 'M' => (&t[..t.len() - 1], 1 << 20),
        'g' | 'G' => (&t[..t.len() - 1], 1 << 30),
        't' | 'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u128)
}

fn read_number(path: &str) -> Option<u128> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the cgroup v2 memory limit still allows, in bytes (`None` without a limit).
fn cgroup_headroom() -> Option<u128> {
    let max = read_number("/sys/fs/cgroup/memory.max")?; // "max" (no limit) does not parse
    let current = read_number("/sys/fs/cgroup/memory.current").unwrap_or(0);
    Some(max.saturating_sub(current))
}

/// What the address-space limit (`ulimit -v`, `RLIMIT_AS`) still allows: the soft limit of
/// `/proc/self/limits` minus `VmSize` of `/proc/self/status` (`None` without a limit).
fn address_space_headroom() -> Option<u128> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft: u128 = line.split_whitespace().nth(3)?.parse().ok()?; // "unlimited" does not parse
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let size = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kb: u128 = size.split_whitespace().nth(1)?.parse().ok()?;
    Some(soft.saturating_sub(kb * 1024))
}

/// The memory this process may still allocate, and where that number comes from.
pub fn budget() -> Option<(u128, &'static str)> {
    if let Ok(text) = std::env::var("GSC_CORE_MAX_MEMORY") {
        if let Some(b) = parse_budget(&text) {
            return Some((b, "GSC_CORE_MAX_MEMORY"));
        }
    }
    [
        (mem_available(), "available memory"),
        (cgroup_headroom(), "the cgroup memory limit's headroom"),
        (
            address_space_headroom(),
            "the address-space limit's headroom",
        ),
    ]
    .into_iter()
    .filter_map(|(b, source)| b.map(|b| (b, source)))
    .min_by_key(|&(b, _)| b)
}

/// Requests below this size are never refused (and cost no look-up of the budget).
const ALWAYS_ALLOWED: u128 = 8 << 20;

/// Fails with [`CoreError::OutOfMemory`] when `bytes` (the large buffers of `what`) exceed the
/// memory budget. `hint` says how to ask for less.
pub fn ensure_fits(bytes: u128, what: &str, hint: &str) -> Result<()> {
    if bytes < ALWAYS_ALLOWED {
        return Ok(());
    }
    match budget() {
        Some((limit, source)) if bytes > limit => Err(CoreError::OutOfMemory(format!(
            "{what} needs about {} but {source} is {}; {hint}",
            human(bytes),
            human(limit)
        ))),
        _ => Ok(()),
    }
}

/// `a * b * ...` without overflow (saturating at `u128::MAX`).
pub fn product(factors: &[usize]) -> u128 {
    factors
        .iter()
        .fold(1u128, |acc, &f| acc.saturating_mul(f as u128))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_suffixes() {
        assert_eq!(parse_budget("1000"), Some(1000));
        assert_eq!(parse_budget("2k"), Some(2048));
        assert_eq!(parse_budget(" 1.5G "), Some(3 << 29));
        assert_eq!(parse_budget("3MiB"), Some(3 << 20));
        assert_eq!(parse_budget("1e9"), Some(1_000_000_000));
        assert_eq!(parse_budget("lots"), None);
        assert_eq!(parse_budget("-1"), None);
        assert_eq!(parse_budget(""), None);
    }

    #[test]
    fn absurd_requests_fail_fast_with_the_size() {
        if budget().is_none() {
            return; // no way to know the memory here
        }
        let e = ensure_fits(u128::MAX / 2, "a test buffer", "ask for less").unwrap_err();
        match e {
            CoreError::OutOfMemory(msg) => {
                assert!(
                    msg.contains("a test buffer")
                        && msg.contains("TB")
                        && msg.contains("ask for less"),
                    "{msg}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(ensure_fits(1, "one byte", "").is_ok());
        assert_eq!(product(&[usize::MAX, usize::MAX, 4]), u128::MAX);
    }
}
