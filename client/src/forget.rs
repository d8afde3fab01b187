//! `dupla forget`: remove snapshots by id, or keep those a policy wants
//! (`--keep-last/-daily/-weekly/-monthly`, as restic does) and remove the
//! rest. A policy applies to each group of snapshots of the same host and
//! paths on its own, so a backup of `docs` never pushes out one of `photos`.
//! The manager then drops the file versions no kept snapshot uses, and the
//! servers' garbage collection reclaims their chunks after its grace period.

use crate::cli::ForgetArgs;
use crate::output::{format_unix_ms, Output};
use crate::session::Client;
use crate::snapshots;
use dupla::retention::{self, Policy, SnapshotTime};
use dupla::v1::SnapshotInfo;
use serde::Serialize;
use std::collections::BTreeMap;

/// `forget --json`: the ids kept and removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetJson {
    /// Snapshots kept.
    pub keep: Vec<String>,
    /// Snapshots removed (or that would be, with --dry-run).
    pub remove: Vec<String>,
}

/// `dupla forget`.
pub async fn command(client: &Client, args: &ForgetArgs, out: Output) -> anyhow::Result<()> {
    let policy = Policy {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    let has_policy = !policy.is_empty();
    let has_ids = !args.ids.is_empty();
    if has_policy == has_ids {
        // A usage error (exit status 2), as clap's own are.
        return Err(crate::Usage(
            "name snapshot ids, or a policy (--keep-last, --keep-daily, --keep-weekly, \
             --keep-monthly), not both and not neither",
        )
        .into());
    }
    let all = client.snapshots(&[]).await?;
    let mut result = ForgetJson::default();
    let mut text = Vec::new();
    if has_policy {
        for ((host, paths), group) in groups(&all) {
            text.push(format!("snapshots of {} on {host}:", paths.join(" ")));
            let times: Vec<SnapshotTime> = group
                .iter()
                .map(|s| SnapshotTime {
                    id: s.id.clone(),
                    unix_ms: s.time_unix_ms,
                })
                .collect();
            for decision in retention::apply(&policy, &times) {
                let time = group
                    .iter()
                    .find(|s| s.id == decision.id)
                    .map_or(0, |s| s.time_unix_ms);
                if decision.keep {
                    text.push(format!(
                        "  keep   {} {}  ({})",
                        decision.id,
                        format_unix_ms(time),
                        decision.reasons.join(", ")
                    ));
                    result.keep.push(decision.id);
                } else {
                    text.push(format!(
                        "  remove {} {}  (no rule keeps it)",
                        decision.id,
                        format_unix_ms(time)
                    ));
                    result.remove.push(decision.id);
                }
            }
        }
    } else {
        for id in &args.ids {
            let snapshot = snapshots::resolve(&all, id)?;
            if result.remove.contains(&snapshot.id) {
                continue;
            }
            text.push(format!(
                "  remove {} {}  (named)",
                snapshot.id,
                format_unix_ms(snapshot.time_unix_ms)
            ));
            result.remove.push(snapshot.id.clone());
        }
        result.keep = all
            .iter()
            .filter(|s| !result.remove.contains(&s.id))
            .map(|s| s.id.clone())
            .collect();
    }
    if args.dry_run || result.remove.is_empty() {
        text.push(format!(
            "{} kept, {} {}",
            result.keep.len(),
            result.remove.len(),
            if args.dry_run {
                "would be removed (dry run: nothing changed)"
            } else {
                "removed"
            }
        ));
    } else {
        let reply = client.forget(result.remove.clone()).await?;
        text.push(format!(
            "{} kept, {} removed; {} file versions no kept snapshot uses left the catalog \
             (their chunks are reclaimed by garbage collection)",
            result.keep.len(),
            reply.removed.len(),
            reply.versions_removed
        ));
    }
    out.emit(text.join("\n"), &result)
}

/// Snapshots grouped by host and paths, each group oldest first.
fn groups(all: &[SnapshotInfo]) -> BTreeMap<(String, Vec<String>), Vec<&SnapshotInfo>> {
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&SnapshotInfo>> = BTreeMap::new();
    for snapshot in all {
        let mut paths = snapshot.paths.clone();
        paths.sort();
        groups
            .entry((snapshot.host.clone(), paths))
            .or_default()
            .push(snapshot);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_by_host_and_paths() {
        let snap = |id: &str, host: &str, paths: &[&str]| SnapshotInfo {
            id: id.into(),
            host: host.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let all = vec![
            snap("a", "h", &["docs", "b"]),
            snap("b", "h", &["b", "docs"]),
            snap("c", "h", &["docs"]),
            snap("d", "g", &["docs"]),
        ];
        let groups = groups(&all);
        assert_eq!(groups.len(), 3);
        let both = &groups[&("h".to_string(), vec!["b".to_string(), "docs".to_string()])];
        assert_eq!(both.len(), 2);
    }
}
