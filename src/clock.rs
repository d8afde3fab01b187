//! `dupla.v1.Clock`: the node's wall clock, for Cristian-style sync.

use crate::v1::{clock_server::Clock, NowReply, NowRequest};
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    (unix_nanos() / 1_000_000) as i64
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// `unix_ms` as a UTC date and time to the second, `YYYY-MM-DD HH:MM:SS`:
/// the client's table columns and JSON times.
pub fn format_utc_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::retention::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// [`format_utc_time`] saying its zone, `YYYY-MM-DD HH:MM:SS UTC`: how a
/// message shows an instant (the client's `login` and `whoami` print the
/// same), never raw milliseconds.
pub fn format_utc(unix_ms: i64) -> String {
    format!("{} UTC", format_utc_time(unix_ms))
}

/// The Clock service; stateless.
#[derive(Default, Clone, Copy, Debug)]
pub struct ClockService;

#[tonic::async_trait]
impl Clock for ClockService {
    async fn now(&self, _request: Request<NowRequest>) -> Result<Response<NowReply>, Status> {
        let nanos = unix_nanos();
        Ok(Response::new(NowReply {
            unix_ms: (nanos / 1_000_000) as i64,
            unix_nanos: nanos as i64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_as_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        // The expiry a user once saw as "1796395917029 (unix ms)".
        assert_eq!(format_utc(1_796_395_917_029), "2026-12-04 14:51:57 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
