//! `dupla rm NAME`: take a file out of the catalog and say what went.

use crate::list::{holders, EntryJson};
use crate::output::Output;
use crate::session::Client;
use dupla::size::format_size;
use dupla::v1::{FileEntry, RemoveRequest};
use dupla::{Error, Result};

impl Client {
    /// Remove `name` from the catalog; returns the entry that was removed.
    pub async fn remove(&self, name: &str) -> Result<FileEntry> {
        dupla::name::validate(name)?;
        let request = self.request(RemoveRequest {
            name: name.to_string(),
        });
        let reply = self
            .manager()
            .await?
            .remove(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => not_in_catalog(name),
                _ => self.manager_error(status),
            })?;
        reply
            .into_inner()
            .removed
            .ok_or_else(|| not_in_catalog(name))
    }
}

/// The message for a name the catalog does not have.
fn not_in_catalog(name: &str) -> Error {
    Error::NotFound(format!("{name}: not found in your backups"))
}

/// `dupla rm`: remove and report.
pub async fn command(client: &Client, name: &str, out: Output) -> anyhow::Result<()> {
    let removed = client.remove(name).await?;
    let human = format!(
        "removed {} ({}, was on {})",
        removed.name,
        format_size(removed.size),
        holders(&removed).join(", ")
    );
    out.emit(human, &EntryJson::from(&removed))
}
