//! A proxy gateway's use of the service: a local copy of every
//! organization's entitlement inputs kept by `WatchEntitlements` (resuming
//! from its last version after a disconnect, starting over on `resync`),
//! and `CheckEntitlement` whenever the copy cannot answer: before the
//! first snapshot is complete, while the stream is down, or for a decision
//! the copy does not hold (paid models, which need the live credit
//! balance).
//!
//! ```sh
//! GATEWAY_TOKEN=... cargo run --example gateway -- \
//!     --addr http://127.0.0.1:50051 --org <org id> --user alice --model gpt-4o-mini
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::entitlement_update::Update;
use billing_service::grpc::proto::{
    AccessState, CheckEntitlementRequest, EntitlementUpdate, OrgEntitlements,
    WatchEntitlementsRequest,
};
use clap::Parser;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_types::StatusExt;

#[derive(Debug, Parser)]
struct Args {
    /// The service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The gateway token (`gateway:<token>` in `BILLING_CALLER_TOKENS`).
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    org: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    model: Option<String>,
}

/// What the watch has delivered so far.
#[derive(Debug, Default)]
struct LocalCopy {
    orgs: HashMap<String, OrgEntitlements>,
    /// Every change up to here is applied; where a reconnect resumes.
    version: Option<u64>,
    /// The snapshot is complete and the stream is open.
    ready: bool,
}

type Shared = Arc<RwLock<LocalCopy>>;

/// Every call carries the gateway's token.
fn authorized<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Follows the stream for good: reconnects with `resume_from` after any
/// error, waiting as the status's `RetryInfo` asks (or a second).
async fn follow(channel: Channel, token: String, copy: Shared) {
    let mut client = EntitlementServiceClient::new(channel);
    loop {
        let resume_from = copy.read().map(|c| c.version).unwrap_or(None);
        let watch = WatchEntitlementsRequest {
            org_ids: vec![],
            resume_from,
        };
        let ended = match client.watch_entitlements(authorized(&token, watch)).await {
            Ok(stream) => apply_updates(stream.into_inner(), &copy).await,
            Err(status) => status,
        };
        if let Ok(mut copy) = copy.write() {
            copy.ready = false;
        }
        let wait = ended
            .get_details_retry_info()
            .and_then(|retry| retry.retry_delay)
            .unwrap_or(Duration::from_secs(1));
        eprintln!("watch ended ({}); resuming in {wait:?}", ended.code());
        tokio::time::sleep(wait).await;
    }
}

/// Applies updates until the stream ends, and says how it ended.
async fn apply_updates(mut stream: tonic::Streaming<EntitlementUpdate>, copy: &Shared) -> Status {
    loop {
        let update = match stream.message().await {
            Ok(Some(update)) => update,
            Ok(None) => return Status::unavailable("the stream ended"),
            Err(status) => return status,
        };
        let Ok(mut copy) = copy.write() else {
            return Status::internal("the local copy is poisoned");
        };
        match update.update {
            Some(Update::Organization(org)) => {
                copy.orgs.insert(org.org_id.clone(), org);
            }
            Some(Update::RemovedOrgId(id)) => {
                copy.orgs.remove(&id);
            }
            Some(Update::Resync(_)) => {
                copy.orgs.clear();
                copy.ready = false;
            }
            Some(Update::SnapshotComplete(_)) => copy.ready = true,
            None => {}
        }
        copy.version = Some(update.version);
    }
}

/// The local answer, when the copy holds the whole decision: a free model
/// for a member of an organization whose access is settled. `None` asks
/// the service.
fn decide_locally(copy: &LocalCopy, org: &str, user: &str, model: Option<&str>) -> Option<bool> {
    if !copy.ready {
        return None;
    }
    let Some(entitlements) = copy.orgs.get(org) else {
        // Unknown here: created a moment ago, or not an organization.
        return None;
    };
    if !entitlements.members.iter().any(|m| m.user_id == user) {
        return Some(false);
    }
    let access = match entitlements.access() {
        AccessState::Subscribed | AccessState::Bypass => true,
        AccessState::SeatsExceeded
        | AccessState::TrialExpired
        | AccessState::SubscriptionInactive => false,
        // A trial's stage moves with the clock; the service decides.
        AccessState::Trial | AccessState::TrialGrace | AccessState::Unspecified => return None,
    };
    match model {
        Some(model) if entitlements.model_deny_list.iter().any(|m| m == model) => Some(false),
        // A paid model needs the live credit balance: the service decides.
        Some(_) => None,
        None => Some(access),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Endpoint::from_shared(args.addr.clone())?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy();
    let copy = Shared::default();
    tokio::spawn(follow(channel.clone(), args.token.clone(), copy.clone()));

    let mut checks = EntitlementServiceClient::new(channel);
    for _ in 0..5 {
        let local = copy
            .read()
            .ok()
            .and_then(|c| decide_locally(&c, &args.org, &args.user, args.model.as_deref()));
        match local {
            Some(allowed) => println!("local copy: allowed = {allowed}"),
            None => {
                let check = CheckEntitlementRequest {
                    org_id: args.org.clone(),
                    user_id: args.user.clone(),
                    feature: "proxy".into(),
                    model: args.model.clone(),
                    ..Default::default()
                };
                match checks
                    .check_entitlement(authorized(&args.token, check))
                    .await
                {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        println!(
                            "CheckEntitlement: allowed = {} ({:?})",
                            reply.allowed,
                            reply.reason()
                        );
                    }
                    Err(status) => println!("CheckEntitlement failed: {status}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
