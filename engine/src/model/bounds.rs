//! Upper and lower limits for every size a config file sets.
//!
//! Why: a config value is a promise about memory. An absurd one (`text_encoder.max_length:
//! 100000000`) used to pass validation and abort on a petabyte allocation minutes later, deep in
//! the T5 position bias. Every count is therefore checked against a range the architecture can
//! run, generous next to the published checkpoints (whose values the messages quote), before
//! any tensor is made.

use crate::error::{Error, Result};

/// `what key = value` must lie in `lo..=hi`; `real` names what the published models use.
pub fn check(
    section: &str,
    key: &str,
    value: usize,
    lo: usize,
    hi: usize,
    real: &str,
) -> Result<()> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "{section}: {key} = {value} is out of range ({lo}..={hi}; {real})"
    )))
}

/// A float that must be finite and in `lo..=hi`.
pub fn check_f64(section: &str, key: &str, value: f64, lo: f64, hi: f64, real: &str) -> Result<()> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "{section}: {key} = {value} is out of range ({lo}..={hi}; {real})"
    )))
}

/// Keys of a mapping that are not in `known`, as one message (`None` when all are known).
pub fn unknown_keys<'a>(
    section: &str,
    keys: impl IntoIterator<Item = &'a str>,
    known: &[&str],
) -> Option<String> {
    let unknown: Vec<&str> = keys.into_iter().filter(|k| !known.contains(k)).collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "{section}: unknown key(s) {} (expected some of: {})",
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        )
    })
}
