//! Files: the catalog of every version, uploads in progress, snapshots,
//! and the repair of files that lost a copy.

pub mod catalog;
pub mod repair;
pub mod repair_worker;
pub mod snapshot_service;
pub mod snapshots;
pub mod uploads;
