//! How long a security fix takes to reach the running container: from the first verified
//! InRelease that carried it to its proposal, the merge, and the deploy — per image, in
//! `<state>/fix-timeline.json`, and as the Prometheus histogram `rebake_fix_latency_seconds`
//! (`stage` = `proposed`, `merged`, `deployed`) on `rebake serve`'s `/metrics`. These are the
//! numbers a team compares with a distribution's "fixed within 48 hours".
//!
//! One entry per proposal head and image: the propose stage writes the fix's first sighting and
//! when the proposal carried it; the deploy stage adds when the commit that brought the lock
//! was made (the merge) and when the deploy succeeded. Each time is written once.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const TIMELINE_FILE: &str = "fix-timeline.json";

/// The upper bounds of the histogram's buckets, in seconds: 1 h, 6 h, 12 h, 1 d, 2 d, 3 d, 1 w,
/// 2 w, 30 d.
pub const BUCKETS: [u64; 9] = [
    3600, 21_600, 43_200, 86_400, 172_800, 259_200, 604_800, 1_209_600, 2_592_000,
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub image: String,
    /// The first verified sighting of the (earliest) security fix the proposal carries.
    pub fix_first_seen: DateTime<Utc>,
    pub proposed: Option<DateTime<Utc>>,
    pub merged: Option<DateTime<Utc>>,
    pub deployed: Option<DateTime<Utc>>,
}

/// `<head>/<image>` → entry.
pub type Timeline = BTreeMap<String, Entry>;

fn key(head: &str, image: &str) -> String {
    format!("{head}/{image}")
}

pub fn read(state_dir: &Path) -> Result<Timeline> {
    let path = state_dir.join(TIMELINE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a fix timeline; fix or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Timeline::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn update(state_dir: &Path, f: impl FnOnce(&mut Timeline) -> bool) -> Result<()> {
    let mut t = read(state_dir)?;
    if f(&mut t) {
        std::fs::create_dir_all(state_dir)?;
        crate::state::write_atomic(
            &state_dir.join(TIMELINE_FILE),
            &serde_json::to_vec_pretty(&t)?,
        )?;
    }
    Ok(())
}

/// The proposal at `head` carries a security fix for `image` first seen at `fix_first_seen`.
pub fn proposed(
    state_dir: &Path,
    head: &str,
    image: &str,
    fix_first_seen: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<()> {
    update(state_dir, |t| {
        let e = t.entry(key(head, image)).or_insert_with(|| Entry {
            image: image.to_string(),
            fix_first_seen,
            ..Entry::default()
        });
        if e.proposed.is_some() {
            return false;
        }
        e.proposed = Some(at);
        true
    })
}

/// `image`'s lock from the proposal at `head` was merged at `merged` and deployed at
/// `deployed`. Nothing is recorded for a proposal that carried no security fix.
pub fn deployed(
    state_dir: &Path,
    head: &str,
    image: &str,
    merged: DateTime<Utc>,
    deployed: DateTime<Utc>,
) -> Result<()> {
    update(state_dir, |t| {
        let Some(e) = t.get_mut(&key(head, image)) else {
            return false;
        };
        let changed = e.merged.is_none() || e.deployed.is_none();
        e.merged.get_or_insert(merged);
        e.deployed.get_or_insert(deployed);
        changed
    })
}

/// The histogram in the Prometheus text format (0.0.4), one series per image and stage.
pub fn exposition(timeline: &Timeline) -> String {
    let mut series: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    for e in timeline.values() {
        for (stage, at) in [
            ("proposed", e.proposed),
            ("merged", e.merged),
            ("deployed", e.deployed),
        ] {
            if let Some(at) = at {
                let seconds = (at - e.fix_first_seen).num_milliseconds().max(0) as f64 / 1000.0;
                series
                    .entry((e.image.clone(), stage))
                    .or_default()
                    .push(seconds);
            }
        }
    }
    let mut out = String::from(
        "# HELP rebake_fix_latency_seconds Seconds from a security fix's first verified InRelease to its proposal, merge and deploy.\n\
         # TYPE rebake_fix_latency_seconds histogram\n",
    );
    for ((image, stage), values) in &series {
        let labels = format!("image=\"{}\",stage=\"{stage}\"", escape(image));
        for le in BUCKETS {
            let n = values.iter().filter(|v| **v <= le as f64).count();
            out.push_str(&format!(
                "rebake_fix_latency_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "rebake_fix_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n",
            values.len()
        ));
        out.push_str(&format!(
            "rebake_fix_latency_seconds_sum{{{labels}}} {}\n",
            values.iter().sum::<f64>()
        ));
        out.push_str(&format!(
            "rebake_fix_latency_seconds_count{{{labels}}} {}\n",
            values.len()
        ));
    }
    out
}

/// A label value as the text format escapes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fix_proposed_in_an_hour_and_deployed_in_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let seen: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        let h = chrono::Duration::hours(1);
        proposed(dir.path(), "abc", "nginx", seen, seen + h).unwrap();
        // Later runs do not move it.
        proposed(dir.path(), "abc", "nginx", seen, seen + h * 5).unwrap();
        deployed(dir.path(), "abc", "nginx", seen + h * 20, seen + h * 24).unwrap();
        // A proposal without a security fix has no entry, and gets none.
        deployed(dir.path(), "def", "nginx", seen, seen).unwrap();
        let t = read(dir.path()).unwrap();
        assert_eq!(t.len(), 1);
        let text = exposition(&t);
        for line in [
            "rebake_fix_latency_seconds_bucket{image=\"nginx\",stage=\"proposed\",le=\"3600\"} 1",
            "rebake_fix_latency_seconds_bucket{image=\"nginx\",stage=\"merged\",le=\"43200\"} 0",
            "rebake_fix_latency_seconds_bucket{image=\"nginx\",stage=\"merged\",le=\"86400\"} 1",
            "rebake_fix_latency_seconds_bucket{image=\"nginx\",stage=\"deployed\",le=\"+Inf\"} 1",
            "rebake_fix_latency_seconds_sum{image=\"nginx\",stage=\"deployed\"} 86400",
            "rebake_fix_latency_seconds_count{image=\"nginx\",stage=\"proposed\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
