//! `dupla quota`: what your kept file versions take against your quota;
//! for admins, anyone's, and setting or resetting one user's.

use crate::cli::QuotaArgs;
use crate::output::Output;
use crate::Client;
use dupla::size::format_size;
use dupla::v1::{GetQuotaRequest, QuotaReply, SetQuotaRequest};
use dupla::Result;
use serde::Serialize;

/// A quota and its use, as `quota --json` prints it (0: unlimited).
#[derive(Debug, Serialize)]
struct QuotaJson {
    login: String,
    used_bytes: u64,
    quota_bytes: u64,
    used_files: u64,
    quota_files: u64,
    custom: bool,
}

impl From<&QuotaReply> for QuotaJson {
    fn from(q: &QuotaReply) -> Self {
        QuotaJson {
            login: q.login.clone(),
            used_bytes: q.used_bytes,
            quota_bytes: q.quota_bytes,
            used_files: q.used_files,
            quota_files: q.quota_files,
            custom: q.custom,
        }
    }
}

impl Client {
    /// `login`'s quota and usage (empty: the caller's).
    pub async fn quota(&self, login: &str) -> Result<QuotaReply> {
        let mut manager = self.manager().await?;
        Ok(manager
            .get_quota(self.request(GetQuotaRequest {
                login: login.into(),
            }))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    /// Set `login`'s quota (admins only); `None` keeps a limit as it is.
    pub async fn set_quota(
        &self,
        login: &str,
        bytes: Option<u64>,
        files: Option<u64>,
        reset: bool,
    ) -> Result<QuotaReply> {
        let now = self.quota(login).await?;
        let mut manager = self.manager().await?;
        Ok(manager
            .set_quota(self.request(SetQuotaRequest {
                login: login.into(),
                bytes: bytes.unwrap_or(now.quota_bytes),
                files: files.unwrap_or(now.quota_files),
                reset,
            }))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }
}

/// Run `dupla quota`.
pub async fn command(client: &Client, args: &QuotaArgs, out: Output) -> anyhow::Result<()> {
    let login = args.login.clone().unwrap_or_default();
    let changes = args.bytes.is_some() || args.files.is_some() || args.reset;
    if changes && login.is_empty() {
        anyhow::bail!(
            "name whose quota to set: `dupla quota LOGIN --bytes SIZE --files N` (admins)"
        );
    }
    let quota = if changes {
        client
            .set_quota(&login, args.bytes, args.files, args.reset)
            .await?
    } else {
        client.quota(&login).await?
    };
    out.emit(human(&quota), &QuotaJson::from(&quota))
}

fn human(q: &QuotaReply) -> String {
    let limit = |quota: u64, of: String| match quota {
        0 => " (no limit)".to_string(),
        _ => format!(" of {of}"),
    };
    format!(
        "{}: {} used{}, {} file versions{} ({} quota)",
        q.login,
        format_size(q.used_bytes),
        limit(q.quota_bytes, format_size(q.quota_bytes)),
        q.used_files,
        limit(q.quota_files, q.quota_files.to_string()),
        if q.custom { "own" } else { "default" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_against_the_limits() {
        let q = QuotaReply {
            login: "ada".into(),
            quota_bytes: 10 << 30,
            quota_files: 0,
            used_bytes: 3 << 30,
            used_files: 12,
            custom: true,
        };
        assert_eq!(
            human(&q),
            "ada: 3.0 GiB used of 10.0 GiB, 12 file versions (no limit) (own quota)"
        );
    }
}
