//! Use cases. Each one loads what it needs, asks the domain to decide, and
//! persists the outcome with its audit entry in one transaction, so nothing
//! is ever half-written. Changes that touch Stripe are operations (see
//! `operations`): recorded, planned from Stripe's live state, performed
//! with no transaction open, and finished in a short transaction.
//!
//! Callers arrive as an [`Actor`] already authenticated by the adapter; the
//! role checks against organization membership happen here.

mod actor;
mod adoption;
mod audit_trail;
mod billing;
mod change_flow;
mod checkout;
mod clock;
mod credit_ledger;
mod credit_purchases;
mod credits;
mod entitlement_cache;
mod entitlement_follow;
mod entitlement_reads;
mod entitlements;
mod event_stream;
mod gauges;
mod inbox;
mod instance_renewals;
mod instances;
mod invitations;
mod lifecycle;
mod members;
mod operation_steps;
mod operations;
mod operators;
mod organizations;
mod purchase_checks;
mod resumption;
mod seat_changes;
mod stripe_catch_up;
mod stripe_reconciliation;
mod subscription_changes;
mod subscription_sync;
mod trial_notices;
mod unit_items;
mod upkeep;
mod usage;
mod usage_batch;
mod usage_lanes;
mod versions;
mod watch;
mod webhook_delivery;
mod webhook_endpoints;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub use actor::Actor;
pub use adoption::{ImportOutcome, ImportedCustomer};
pub use billing::SubscriptionView;
pub use clock::{Clock, SystemClock};
pub use credit_purchases::CreditPurchaseOrder;
pub use credits::{CreditAdjustment, CreditBalanceView, CreditGrant, Posted};
pub use entitlement_cache::{CachedOrg, Change, EntitlementCache};
pub use entitlements::{Answer, Checked, EntitlementQuery, EntitlementsView};
pub use event_stream::{EventFilter, WatchStart};
pub use inbox::WorkerStep;
pub use instances::{InstanceView, NewInstance};
pub use members::MembersView;
pub use operators::{OrganizationOverrides, Page};
pub use organizations::{NewOrganization, OrganizationView};
pub use seat_changes::SeatChangeOutcome;
pub use stripe_catch_up::CatchUpReport;
pub use stripe_reconciliation::{ReconcileReport, ReconcileScope};
pub use unit_items::QuantityReport;
pub use usage::{DEFAULT_HOLD_TTL, MAX_HOLD_TTL, Reservation, UsageRecorded, UsageReport};
pub use usage_lanes::default_usage_lanes;
pub use versions::capture_committed_version;
pub use watch::WatchUpdate;
pub use webhook_delivery::WebhookSettings;
pub use webhook_endpoints::{EndpointChanges, MAX_REPLAY, NewEndpoint};

use crate::domain::catalog::{Catalog, Plan, SignupPolicy};
use crate::domain::entitlement::{OrgEntitlementState, StalePolicy, StateVersion};
use crate::domain::ids::OrgId;
use crate::domain::organization::Organization;
use crate::domain::reason::ErrorReason;
use crate::domain::role::{OrgAction, Role};
use crate::domain::trial::TrialLength;
use crate::error::{Error, Result};
use crate::outbound_webhooks::WebhookSender;
use crate::store::{self, Store};
use crate::stripe::StripeApi;

/// Deployment settings the use cases follow.
#[derive(Debug, Clone)]
pub struct Settings {
    pub trial_length: TrialLength,
    pub signup_policy: SignupPolicy,
    /// How long an entitlement read with `min_version` waits for the cache
    /// to catch up before it reads the database instead.
    pub min_version_wait: std::time::Duration,
    /// What entitlement answers do once the state has been stale too long.
    pub stale_policy: StalePolicy,
    /// How many recent changes a watcher may resume from.
    pub watch_log_capacity: usize,
    /// How long an operation's claim holds: past it, the operations loop
    /// takes a running operation over (its performer died).
    pub operation_lease: std::time::Duration,
    /// How long a claimed inbox event is left to its worker: past it,
    /// another worker (on any replica) applies it (its worker died).
    pub event_lease: std::time::Duration,
    /// How long a billing change waits for another change of the same
    /// organization (or a retried key for its first call) before ABORTED.
    pub operation_wait: std::time::Duration,
    /// Usage lanes committing in parallel (each a pooled connection while
    /// it commits); an organization always uses the same one.
    pub usage_lanes: usize,
    /// How lifecycle events are delivered to webhook endpoints.
    pub webhooks: WebhookSettings,
}

/// The use cases, cheap to clone and share between adapters.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// `None` when no Stripe key is configured: the Stripe-backed use cases
    /// then answer FAILED_PRECONDITION and everything else works.
    stripe: Option<StripeApi>,
    /// Every organization's entitlement inputs, for answers from memory.
    cache: Arc<EntitlementCache>,
    /// Usage reports waiting for their group commit.
    usage: usage_lanes::UsageLanes,
    /// Calls webhook endpoints.
    webhook_sender: WebhookSender,
    /// This replica's name in webhook lane claims.
    worker_id: uuid::Uuid,
}

impl Service {
    pub fn new(
        store: Store,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        settings: Settings,
        stripe: Option<StripeApi>,
        cache: Arc<EntitlementCache>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                catalog,
                clock,
                usage: usage_lanes::UsageLanes::new(settings.usage_lanes),
                webhook_sender: WebhookSender::new(
                    settings.webhooks.policy,
                    settings.webhooks.timeout,
                ),
                worker_id: uuid::Uuid::now_v7(),
                settings,
                stripe,
                cache,
            }),
        }
    }

    pub fn cache(&self) -> &EntitlementCache {
        &self.inner.cache
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn stripe_configured(&self) -> bool {
        self.inner.stripe.is_some()
    }

    pub fn signup_policy(&self) -> SignupPolicy {
        self.inner.settings.signup_policy
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) fn stripe(&self) -> Result<&StripeApi> {
        self.inner.stripe.as_ref().ok_or_else(|| {
            Error::precondition(ErrorReason::StripeNotConfigured, "Stripe is not configured")
        })
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// When a lease of `span` taken now ends.
    fn lease_ending(&self, span: std::time::Duration) -> DateTime<Utc> {
        self.now() + chrono::TimeDelta::from_std(span).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// The catalog entry of an organization's plan. A plan missing from the
    /// catalog means the catalog lost a plan that is in use: an operator
    /// error, not the caller's.
    fn plan_of(&self, org: &Organization) -> Result<&Plan> {
        self.catalog().plan(&org.plan).ok_or_else(|| {
            Error::internal(anyhow::anyhow!(
                "organization {} is on plan {:?}, which the catalog does not have",
                org.id,
                org.plan.as_str()
            ))
        })
    }

    /// Checks that `actor` may do `action` in the organization and returns
    /// the acting user's role (operators have none).
    async fn authorize(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        org: OrgId,
        action: OrgAction,
    ) -> Result<Option<Role>> {
        match actor {
            Actor::Operator => Ok(None),
            Actor::Gateway => Err(Error::denied(
                ErrorReason::CallerNotPermitted,
                format!("the gateway may not {}", action.describe()),
            )),
            Actor::User(user) => match store::members::role_of(conn, org, user).await? {
                None => Err(Error::denied(
                    ErrorReason::NotAMember,
                    format!("user {user} is not a member of organization {org}"),
                )),
                Some(role) if role.permits(action) => Ok(Some(role)),
                Some(role) => Err(Error::denied(
                    ErrorReason::RoleNotPermitted,
                    format!(
                        "a {} may not {}",
                        role.as_str().replace('_', " "),
                        action.describe()
                    ),
                )),
            },
        }
    }

    /// Commits a use case's transaction. When it changed an input of the
    /// entitlement decision, the version it took is noted for the caller's
    /// response (see [`versions`]), and this replica's cache is given a
    /// moment to take the change in, so the caller reads its own write here
    /// even without `min_version`.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<Option<StateVersion>> {
        let version = store::commit(tx).await?;
        if let Some(version) = version {
            versions::note_committed(version);
            self.cache()
                .wait_for(version, self.inner.settings.min_version_wait)
                .await;
        }
        Ok(version)
    }

    /// For a change that goes to Stripe: the organization exists, the actor
    /// may manage its billing, and Stripe is configured.
    async fn authorize_billing(&self, actor: &Actor, org: OrgId) -> Result<Organization> {
        let organization = {
            let mut conn = self.store().pool().acquire().await?;
            let organization = load_org(&mut conn, org).await?;
            self.authorize(&mut conn, actor, org, OrgAction::ManageBilling)
                .await?;
            organization
        };
        self.stripe()?;
        Ok(organization)
    }

    fn require_operator(actor: &Actor, what: &str) -> Result<()> {
        match actor {
            Actor::Operator => Ok(()),
            Actor::User(_) | Actor::Gateway => Err(Error::denied(
                ErrorReason::CallerNotPermitted,
                format!("only operators may {what}"),
            )),
        }
    }
}

fn org_not_found(id: OrgId) -> Error {
    Error::NotFound(format!("organization {id} not found"))
}

async fn load_org(conn: &mut PgConnection, id: OrgId) -> Result<Organization> {
    store::organizations::get(conn, id)
        .await?
        .ok_or_else(|| org_not_found(id))
}

/// Loads and locks the organization for the rest of the transaction.
async fn lock_org(conn: &mut PgConnection, id: OrgId) -> Result<Organization> {
    store::organizations::lock(conn, id)
        .await?
        .ok_or_else(|| org_not_found(id))
}

async fn load_state(
    conn: &mut PgConnection,
    org: Organization,
    now: DateTime<Utc>,
) -> Result<OrgEntitlementState> {
    let subscriptions = store::subscriptions::list_for_org(conn, org.id).await?;
    let seats = store::members::seat_holders(conn, org.id, now).await?;
    let credits = store::credits::horizon(conn, org.id).await?;
    Ok(OrgEntitlementState {
        org,
        subscriptions,
        seats,
        credits,
    })
}
