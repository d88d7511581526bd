//! Legion's gRPC API, package `legion.v1`, generated at build time from `proto/legion/v1/*.proto`.
//!
//! Besides the generated messages, clients and servers, this crate holds the conversions between
//! `google.protobuf.Value` / `Timestamp` and `serde_json` / `chrono`, which every process needs.

#![allow(missing_docs, clippy::all)]

/// Generated code for `legion.v1`.
pub mod v1 {
    tonic::include_proto!("legion.v1");
}

mod convert;

pub use convert::{json_to_value, timestamp, timestamp_to_chrono, value_to_json};

/// The encoded `FileDescriptorSet` of every Legion proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/legion_descriptor.bin"));
