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
