//! Compiles the `billing.v1` protos with protox (no system `protoc` needed) and
//! emits the file descriptor set that server reflection serves. Also makes
//! a new migration rebuild the crate: `sqlx::migrate!` embeds `migrations/`
//! when it expands, and nothing else tells Cargo that folder is an input.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/billing/v1/common.proto",
    "proto/billing/v1/billing.proto",
    "proto/billing/v1/credits.proto",
    "proto/billing/v1/entitlement.proto",
    "proto/billing/v1/events.proto",
    "proto/billing/v1/org_admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("billing_v1_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
