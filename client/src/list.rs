//! `dupla ls [PATTERN]`: the catalog's files whose name contains PATTERN (or
//! matches it as a glob with `*` and `?`), as a table or one JSON object per file and line.

use crate::output::{format_unix_ms, short_hex, table, Output};
use crate::session::Client;
use dupla::size::format_size;
use dupla::v1::{FileEntry, ListRequest};
use dupla::Result;
use serde::Serialize;

/// One catalog entry as `ls --json` (and `rm --json`) print it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryJson {
    /// Catalog name.
    pub name: String,
    /// Bytes in the file.
    pub size: u64,
    /// Whole-file blake3, hex.
    pub blake3: String,
    /// Addresses of the servers holding a copy, primary first.
    pub holders: Vec<String>,
    /// How many times the name has been backed up.
    pub version: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub committed_unix_ms: i64,
    /// Every stored copy was found corrupt: back the file up again. Only
    /// printed when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl From<&FileEntry> for EntryJson {
    fn from(e: &FileEntry) -> Self {
        EntryJson {
            name: e.name.clone(),
            size: e.size,
            blake3: hex::encode(&e.blake3),
            holders: holders(e),
            version: e.version,
            committed_unix_ms: e.committed_unix_ms,
            lost: e.lost,
        }
    }
}

/// Holder addresses of an entry, primary first.
pub fn holders(entry: &FileEntry) -> Vec<String> {
    entry.holders.iter().map(|n| n.addr.clone()).collect()
}

impl Client {
    /// Catalog entries whose name matches `pattern` ("" lists everything).
    pub async fn list(&self, pattern: &str) -> Result<Vec<FileEntry>> {
        let request = self.request(ListRequest {
            pattern: pattern.to_string(),
        });
        let reply = self
            .manager()
            .await?
            .list(request)
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(reply.into_inner().files)
    }
}

/// `dupla ls`: a table, or with `--json` one object per file and line
/// (DESIGN §7), nothing when no file matches.
pub async fn command(client: &Client, pattern: &str, out: Output) -> anyhow::Result<()> {
    let mut files = client.list(pattern).await?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if out.json {
        for file in &files {
            out.emit("", &EntryJson::from(file))?;
        }
        return Ok(());
    }
    println!("{}", render(&files, pattern));
    Ok(())
}

/// The text table, or a sentence when nothing matches.
fn render(files: &[FileEntry], pattern: &str) -> String {
    if files.is_empty() {
        return if pattern.is_empty() {
            "you have no backups yet".into()
        } else {
            format!("none of your backups matches {pattern:?}")
        };
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|e| {
            let hex = hex::encode(&e.blake3);
            vec![
                e.name.clone(),
                format_size(e.size),
                short_hex(&hex).to_string(),
                if e.lost {
                    // The listed holders' copies are corrupt: naming them
                    // would suggest the file can be restored.
                    "LOST (every copy corrupt; back it up again)".to_string()
                } else {
                    holders(e).join(",")
                },
                format_unix_ms(e.committed_unix_ms),
            ]
        })
        .collect();
    table(&["NAME", "SIZE", "BLAKE3", "HOLDERS", "COMMITTED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::v1::Node;

    #[test]
    fn entries_render_as_rows_and_json() {
        let entry = FileEntry {
            name: "a/b.txt".into(),
            size: 2048,
            blake3: vec![0xab; 32].into(),
            holders: vec![
                Node {
                    id: "1".into(),
                    addr: "h:1".into(),
                },
                Node {
                    id: "2".into(),
                    addr: "h:2".into(),
                },
            ],
            ..Default::default()
        };
        let text = render(std::slice::from_ref(&entry), "");
        assert!(
            text.contains("a/b.txt  2.0 KiB  abababababab  h:1,h:2  -"),
            "{text}"
        );
        let json = serde_json::to_value(EntryJson::from(&entry)).unwrap();
        assert_eq!(json["holders"], serde_json::json!(["h:1", "h:2"]));
        assert_eq!(json["blake3"].as_str().unwrap().len(), 64);
        assert!(render(&[], "x").contains("none of your backups"));
        assert!(json.get("lost").is_none(), "said only when lost");

        let lost = FileEntry {
            lost: true,
            ..entry
        };
        let text = render(std::slice::from_ref(&lost), "");
        assert!(text.contains("LOST") && !text.contains("h:1"), "{text}");
        assert_eq!(
            serde_json::to_value(EntryJson::from(&lost)).unwrap()["lost"],
            true
        );
    }
}
