//! The generated `billing.v1` types, clients and servers, the descriptors
//! reflection serves, and the domain-to-message conversions of the value
//! types every message shares. The gRPC adapters and the lifecycle-event
//! codec both build on it.

mod generated {
    #![allow(clippy::all, missing_debug_implementations, missing_docs)]
    tonic::include_proto!("billing.v1");
}
pub mod values;

pub use generated::*;

/// The encoded descriptors of `billing.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/billing_v1_descriptor.bin"));
