//! Postgres persistence through sqlx. Queries are checked at compile time
//! against the schema in `migrations/` (offline data in `.sqlx/`).
//!
//! Functions take a `&mut PgConnection` so a use case can run several of them
//! in one transaction; rows are converted into domain types here.
//!
//! Each function is a debug-level span, `db <module>::<function>`: not in
//! the logs at the default level, and exported with traces as a child of
//! the call that ran it.

pub mod audit;
pub mod billing_events;
pub mod checkout_sessions;
pub mod credit_holds;
pub mod credit_postings;
pub mod credits;
pub mod entitlement_versions;
pub mod erasure;
pub mod instances;
pub mod members;
pub mod operations;
pub mod org_notices;
pub mod organizations;
pub mod purchase_checks;
pub mod stripe_catch_up;
pub mod stripe_events;
pub mod stripe_reconciliation;
pub mod subscriptions;
pub mod usage_quantities;
pub mod webhook_deliveries;
pub mod webhook_delivery_log;
pub mod webhook_endpoints;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::entitlement::StateVersion;
use crate::domain::reason::ErrorReason;
use crate::error::{Error, Result};

/// Connections of the webhook bookkeeping pool: each holds one only for a
/// statement or a short transaction.
const BOOKKEEPING_CONNECTIONS: u32 = 4;

/// The migrations, embedded in the binary and applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Connections whose commits do not wait for the disk, for webhook
    /// delivery bookkeeping only (see `webhook_deliveries`).
    bookkeeping: PgPool,
}

impl Store {
    #[tracing::instrument(name = "db connect", level = "debug", skip_all)]
    pub async fn connect(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<Self> {
        // Opened on first use: a replica that sends no webhooks opens none.
        let bookkeeping = PgPoolOptions::new()
            .max_connections(BOOKKEEPING_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool, bookkeeping })
    }

    #[tracing::instrument(name = "db migrate", level = "debug", skip_all)]
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool for webhook delivery bookkeeping (claims, attempts,
    /// outcomes): its commits do not wait for their WAL to reach disk. What
    /// a crash can lose of them is the last moments' records, and the worst
    /// that follows is a delivery sent again under the same webhook-id,
    /// which at-least-once delivery allows. Never for a change or an event.
    pub fn bookkeeping(&self) -> &PgPool {
        &self.bookkeeping
    }

    #[tracing::instrument(name = "db begin", level = "debug", skip_all)]
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// Commits `tx` and returns the entitlement state version it took, if it
/// changed an input of the entitlement decision or recorded a lifecycle
/// event. The announcing triggers are deferred to commit; making them run
/// just before it lets us read the version the transaction took (they keep
/// it in a transaction-local setting). A version taken for events alone
/// announced no organization: it is announced here as the version only,
/// after every organization the transaction may have announced, so a
/// replica moves its watermark past it without reading anything again.
#[tracing::instrument(name = "db commit", level = "debug", skip_all)]
pub async fn commit(mut tx: Transaction<'static, Postgres>) -> Result<Option<StateVersion>> {
    sqlx::query!("set constraints all immediate")
        .execute(&mut *tx)
        .await?;
    let taken = sqlx::query!(
        r#"
        select nullif(current_setting('billing.state_version', true), '')::bigint as "taken",
               coalesce(current_setting('billing.announced', true), '') = 'true' as "announced!"
        "#
    )
    .fetch_one(&mut *tx)
    .await?;
    if let (Some(version), false) = (taken.taken, taken.announced) {
        entitlement_versions::announce_version_only(&mut tx, version).await?;
    }
    tx.commit().await?;
    Ok(taken.taken.and_then(StateVersion::from_stored))
}

/// Turns a violation of the named unique constraint into `AlreadyExists`,
/// leaving every other database error internal.
pub(crate) fn on_unique_violation(
    constraint: &'static str,
    reason: ErrorReason,
    message: impl FnOnce() -> String,
) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| match &error {
        sqlx::Error::Database(db) if db.constraint() == Some(constraint) => {
            Error::exists(reason, message())
        }
        _ => Error::from(error),
    }
}

/// A stored value that does not parse: the schema's checks should make this
/// impossible, so it is internal.
pub(crate) fn corrupt(what: &str, error: impl std::fmt::Display) -> Error {
    Error::internal(anyhow::anyhow!("stored {what} does not parse: {error}"))
}
