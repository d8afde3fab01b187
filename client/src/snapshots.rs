//! The client side of `dupla.v1.Snapshots`: calls that read and write the
//! user's snapshots, and `dupla snapshots`, which lists them.

use crate::output::{format_unix_ms, table, Output};
use crate::session::Client;
use dupla::size::format_size;
use dupla::v1::{
    create_snapshot_request::Part, CreateSnapshotRequest, FindRequest, ForgetReply, ForgetRequest,
    ListSnapshotsRequest, SnapshotEntries, SnapshotEntriesRequest, SnapshotEntry, SnapshotInfo,
    SnapshotMatch, VersionsRequest,
};
use dupla::{Error, Result};
use serde::Serialize;

/// Entries per message when recording a snapshot (the manager's limit).
pub const ENTRIES_PER_MESSAGE: usize = 1024;

/// Messages of a snapshot being recorded that may wait in memory.
const CREATE_DEPTH_MESSAGES: usize = 4;

/// One snapshot as `dupla snapshots --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotJson {
    /// Short hex id.
    pub id: String,
    /// When the run started, `YYYY-MM-DD HH:MM:SS` UTC.
    pub time: String,
    /// The client's host name.
    pub host: String,
    /// The paths the run was given.
    pub paths: Vec<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Regular files in it.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

impl From<&SnapshotInfo> for SnapshotJson {
    fn from(s: &SnapshotInfo) -> Self {
        SnapshotJson {
            id: s.id.clone(),
            time: format_unix_ms(s.time_unix_ms),
            host: s.host.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
            files: s.files,
            bytes: s.bytes,
        }
    }
}

impl Client {
    /// The user's snapshots, oldest first; with `paths`, only those of
    /// exactly these paths.
    pub async fn snapshots(&self, paths: &[String]) -> Result<Vec<SnapshotInfo>> {
        let request = self.request(ListSnapshotsRequest {
            paths: paths.to_vec(),
        });
        let mut stream = self
            .manager_snapshots()
            .await?
            .list(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        let mut all = Vec::new();
        while let Some(info) = stream.message().await.map_err(|s| self.manager_error(s))? {
            all.push(info);
        }
        Ok(all)
    }

    /// Resolve `id` (a whole id, a prefix of one, or `latest`) to one of
    /// the user's snapshots.
    pub async fn snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        let all = self.snapshots(&[]).await?;
        resolve(&all, id).cloned()
    }

    /// Call `each` on every entry of snapshot `id` at or below `prefix`, in
    /// path order, as the manager streams them.
    pub async fn snapshot_entries(
        &self,
        id: &str,
        prefix: &str,
        mut each: impl FnMut(SnapshotEntry) -> Result<()>,
    ) -> Result<()> {
        let request = self.request(SnapshotEntriesRequest {
            id: id.to_string(),
            prefix: prefix.to_string(),
        });
        let mut stream = self
            .manager_snapshots()
            .await?
            .entries(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        while let Some(batch) = stream.message().await.map_err(|s| self.manager_error(s))? {
            for entry in batch.entries {
                each(entry)?;
            }
        }
        Ok(())
    }

    /// Record a snapshot with `header` (time, host, paths, tags) and
    /// `entries` (in path order). Returns it as the manager stored it.
    pub async fn create_snapshot(
        &self,
        header: SnapshotInfo,
        entries: Vec<SnapshotEntry>,
    ) -> Result<SnapshotInfo> {
        let (tx, rx) = tokio::sync::mpsc::channel(CREATE_DEPTH_MESSAGES);
        let feeder = tokio::spawn(async move {
            let begin = CreateSnapshotRequest {
                part: Some(Part::Begin(header)),
            };
            if tx.send(begin).await.is_err() {
                return;
            }
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let batch: Vec<SnapshotEntry> =
                    entries.by_ref().take(ENTRIES_PER_MESSAGE).collect();
                let part = Part::Entries(SnapshotEntries { entries: batch });
                if tx
                    .send(CreateSnapshotRequest { part: Some(part) })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let request = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = self
            .manager_snapshots()
            .await?
            .create(request)
            .await
            .map_err(|s| self.manager_error(s));
        feeder.abort();
        Ok(reply?.into_inner())
    }

    /// Entries of every snapshot matching `request`.
    pub async fn find(&self, request: FindRequest) -> Result<Vec<SnapshotMatch>> {
        let request = self.request(request);
        let stream = self
            .manager_snapshots()
            .await?
            .find(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        self.collect(stream).await
    }

    /// `path`'s entry in each snapshot that holds it, oldest first.
    pub async fn versions(&self, path: &str) -> Result<Vec<SnapshotMatch>> {
        let request = self.request(VersionsRequest {
            path: path.to_string(),
        });
        let stream = self
            .manager_snapshots()
            .await?
            .versions(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        self.collect(stream).await
    }

    /// Remove snapshots `ids`.
    pub async fn forget(&self, ids: Vec<String>) -> Result<ForgetReply> {
        let request = self.request(ForgetRequest { ids });
        Ok(self
            .manager_snapshots()
            .await?
            .forget(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    async fn collect<T>(&self, mut stream: tonic::Streaming<T>) -> Result<Vec<T>> {
        let mut all = Vec::new();
        while let Some(item) = stream.message().await.map_err(|s| self.manager_error(s))? {
            all.push(item);
        }
        Ok(all)
    }
}

/// The snapshot of `all` (oldest first) that `id` names: `latest`, a whole
/// id, or the start of exactly one id (as restic takes them), so a user can
/// type the first few digits.
pub fn resolve<'a>(all: &'a [SnapshotInfo], id: &str) -> Result<&'a SnapshotInfo> {
    if id == "latest" {
        return all
            .last()
            .ok_or_else(|| Error::NotFound("you have no snapshots yet".into()));
    }
    if let Some(exact) = all.iter().find(|s| s.id == id) {
        return Ok(exact);
    }
    let starting: Vec<&SnapshotInfo> = if id.is_empty() {
        Vec::new()
    } else {
        all.iter().filter(|s| s.id.starts_with(id)).collect()
    };
    match starting.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::NotFound(format!(
            "no snapshot {id} in your backups (`dupla snapshots` lists them)"
        ))),
        several => Err(Error::InvalidInput(format!(
            "{id} is the start of {} snapshot ids ({}); give more of the id",
            several.len(),
            several
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `dupla snapshots`: a table, or one JSON line per snapshot.
pub async fn command(client: &Client, paths: &[String], out: Output) -> anyhow::Result<()> {
    let all = client.snapshots(paths).await?;
    if out.json {
        for snapshot in &all {
            out.emit("", &SnapshotJson::from(snapshot))?;
        }
        return Ok(());
    }
    if all.is_empty() {
        println!("you have no snapshots yet; `dupla backup PATH...` makes one");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                format_unix_ms(s.time_unix_ms),
                s.host.clone(),
                s.tags.join(","),
                s.paths.join(" "),
                s.files.to_string(),
                format_size(s.bytes),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["ID", "TIME", "HOST", "TAGS", "PATHS", "FILES", "SIZE"],
            &rows
        )
    );
    match all.len() {
        1 => println!("1 snapshot"),
        n => println!("{n} snapshots"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_id_resolves_whole_by_a_unique_prefix_or_as_latest() {
        let all = [
            snapshot("1a2b3c4d"),
            snapshot("1a9f0000"),
            snapshot("5e6f7a8b"),
        ];
        assert_eq!(resolve(&all, "1a2b3c4d").unwrap().id, "1a2b3c4d");
        assert_eq!(resolve(&all, "5e").unwrap().id, "5e6f7a8b");
        assert_eq!(resolve(&all, "1a2").unwrap().id, "1a2b3c4d");
        assert_eq!(resolve(&all, "latest").unwrap().id, "5e6f7a8b");
        let ambiguous = resolve(&all, "1a").unwrap_err().to_string();
        assert!(
            ambiguous.contains("1a2b3c4d, 1a9f0000") && ambiguous.contains("more of the id"),
            "{ambiguous}"
        );
        for unknown in ["ff", "", "1a2b3c4d0"] {
            assert!(
                matches!(resolve(&all, unknown), Err(Error::NotFound(_))),
                "{unknown:?}"
            );
        }
        assert!(matches!(resolve(&[], "latest"), Err(Error::NotFound(_))));
    }
}
