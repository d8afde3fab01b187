//! Dupla's shared core: the generated wire types, and the small pieces every
//! role needs — errors, hashes, chunking, file names, placement, config
//! helpers, the storage trait, gRPC plumbing and the shutdown signal.
//!
//! Nothing here is specific to the manager, a storage server or the client;
//! the decision logic (placement) is plain functions without I/O.

pub mod alloc;
pub mod broker;
pub mod chat;
pub mod chunk;
pub mod clock;
pub mod config;
pub mod connections;
pub mod error;
pub mod greeter;
pub mod hash;
pub mod kv;
pub mod metrics;
pub mod name;
pub mod placement;
pub mod pool;
pub mod retention;
pub mod rpc;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use error::{Error, Result};
pub use hash::Hash;

/// Generated prost messages and tonic services of the `dupla.v1` package.
pub mod v1 {
    #![allow(missing_docs, clippy::all, rustdoc::all)]
    tonic::include_proto!("dupla.v1");

    /// Encoded descriptors of every `dupla.v1` proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/dupla_descriptor.bin"));
}
