//! One commit of usage reports and reservations, for one or many
//! organizations: the accounts are locked in id order, the domain's rules
//! are applied to each organization's book in arrival order, and everything
//! is written in a fixed number of statements, then committed once. A
//! balance that crosses its low-balance threshold or zero is announced in
//! the same commit (rare, so it costs a batch nothing otherwise).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::credit_holds::CreditHold;
use crate::domain::credits::CreditEntry;
use crate::domain::entitlement::StateVersion;
use crate::domain::ids::OrgId;
use crate::domain::ledger_book::LedgerBook;
use crate::domain::lifecycle::alerts::BalanceLevel;
use crate::domain::usage::{OrgUsage, UsageOutcome, UsageRequest};
use crate::error::{Error, Result};
use crate::store::{self, Store, credit_postings::LockedAccount};

use super::lifecycle::{BalanceAfter, record_balance_alerts};

/// A report or reservation waiting for its commit.
#[derive(Debug, Clone)]
pub(super) struct UsageItem {
    pub org: OrgId,
    /// Whether the organization's credits are locked, from the entitlement
    /// state the caller read.
    pub locked: bool,
    pub request: UsageRequest,
}

/// Posts `items` in one transaction; outcomes come back in item order,
/// with the state version the commit took if it changed an entitlement
/// input (a balance or its holds crossing zero) or announced an event.
/// `default_threshold` is the catalog's low-balance threshold.
pub(super) async fn post(
    store: &Store,
    items: Vec<UsageItem>,
    default_threshold: i64,
    now: DateTime<Utc>,
) -> Result<(Vec<UsageOutcome>, Option<StateVersion>)> {
    let mut orgs: Vec<Uuid> = items.iter().map(|item| item.org.as_uuid()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    let mut tx = begin(store).await?;
    let mut accounts = store::credit_postings::lock_accounts(&mut tx, &orgs).await?;
    if accounts.len() < orgs.len() {
        // First postings of some organizations: create their accounts on
        // their own, then lock every account again in order.
        tx.rollback().await?;
        let missing: Vec<Uuid> = orgs
            .iter()
            .copied()
            .filter(|org| !accounts.contains_key(&OrgId::from(*org)))
            .collect();
        let mut conn = store.pool().acquire().await?;
        store::credit_postings::create_accounts(&mut conn, &missing).await?;
        drop(conn);
        tx = begin(store).await?;
        accounts = store::credit_postings::lock_accounts(&mut tx, &orgs).await?;
        if accounts.len() < orgs.len() {
            return Err(Error::internal(anyhow::anyhow!(
                "credit accounts were not created"
            )));
        }
    }
    let Lookups {
        hold_ids,
        reserve_keys,
        debit_keys,
    } = lookups(&items);
    let (reserve_orgs, reserve_keys): (Vec<Uuid>, Vec<String>) = reserve_keys.into_iter().unzip();
    let (debit_orgs, debit_keys): (Vec<Uuid>, Vec<String>) = debit_keys.into_iter().unzip();
    let holds =
        store::credit_holds::for_batch(&mut tx, &orgs, &hold_ids, &reserve_orgs, &reserve_keys)
            .await?;
    let posted = store::credits::usage_by_keys(&mut tx, &debit_orgs, &debit_keys).await?;

    let mut books = open_books(&items, accounts, holds, posted, now);
    let outcomes = items
        .into_iter()
        .map(|item| {
            let book = books.get_mut(&item.org).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("no credit account for {}", item.org))
            })?;
            Ok(book.usage.apply(item.request))
        })
        .collect::<Result<Vec<UsageOutcome>>>()?;

    let mut changes = Vec::with_capacity(books.len());
    let mut balances = Vec::with_capacity(books.len());
    for (org, book) in books {
        let finished = book.usage.finish();
        balances.push(BalanceAfter {
            org,
            previous: book.level,
            threshold: book.threshold.unwrap_or(default_threshold),
            balance: finished.balance,
        });
        changes.push((org, finished, book.horizon));
    }
    let new_holds: Vec<CreditHold> = changes
        .iter()
        .flat_map(|(_, c, _)| c.new_holds.iter().cloned())
        .collect();
    let closed_holds: Vec<CreditHold> = changes
        .iter()
        .flat_map(|(_, c, _)| c.closed_holds.iter().cloned())
        .collect();
    // Holds first: a settling entry refers to its hold.
    store::credit_holds::insert(&mut tx, &new_holds).await?;
    let book_changes: Vec<_> = changes.iter().map(|(org, c, _)| (*org, &c.book)).collect();
    store::credit_postings::write(&mut tx, &book_changes).await?;
    store::credit_holds::close(&mut tx, &closed_holds, now).await?;
    let horizons: Vec<_> = changes
        .iter()
        .filter(|(_, c, stored)| c.horizon != *stored)
        .map(|(org, c, _)| (*org, c.horizon))
        .collect();
    let alerted = record_balance_alerts(&mut tx, now, &balances).await?;
    if horizons.is_empty() && alerted.is_empty() {
        // Only a horizon change or an event announces itself; without one
        // there is no version to read back, so the commit is one round trip.
        tx.commit().await?;
        return Ok((outcomes, None));
    }
    store::credit_postings::set_horizons(&mut tx, &horizons).await?;
    let version = store::commit(tx).await?;
    Ok((outcomes, version))
}

/// A batch's transaction, planning each statement for the tables as they
/// are now. Its lookups and updates run thousands of times a second on
/// tables that grow as fast; as prepared statements their generic plan is
/// cached for the connection's life, and one made while the ledger was
/// small (a fresh database, before autovacuum's first analyze) keeps a
/// choice that was free then and is ruinous later. Measured: with generic
/// plans (sequential scans ruled out, every lookup a lateral join per key)
/// the replay lookup picked the organization's index and filtered its whole
/// ledger, from 20 ms to 500 ms a batch as it grew; custom plans cost a
/// tenth to a sixth of PostgreSQL's time in planning, and stay right.
async fn begin(store: &Store) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    Ok(store
        .pool()
        .begin_with("begin; set local plan_cache_mode = force_custom_plan")
        .await?)
}

/// What the batch must look up besides the accounts.
struct Lookups {
    /// Holds named by settlements.
    hold_ids: Vec<Uuid>,
    /// Reservations' (organization, key) pairs, each once.
    reserve_keys: Vec<(Uuid, String)>,
    /// Debits' (organization, key) pairs, each once.
    debit_keys: Vec<(Uuid, String)>,
}

fn lookups(items: &[UsageItem]) -> Lookups {
    let mut hold_ids = Vec::new();
    let mut reserve_keys = Vec::new();
    let mut debit_keys = Vec::new();
    for item in items {
        let org = item.org.as_uuid();
        match &item.request {
            UsageRequest::Debit(debit) => {
                debit_keys.push((org, debit.key.clone()));
                hold_ids.extend(debit.hold.map(|id| id.as_uuid()));
            }
            UsageRequest::Reserve(hold) => reserve_keys.push((org, hold.key.clone())),
        }
    }
    for list in [&mut reserve_keys, &mut debit_keys] {
        list.sort_unstable();
        list.dedup();
    }
    Lookups {
        hold_ids,
        reserve_keys,
        debit_keys,
    }
}

/// One organization's book for the batch, with what was stored about it.
struct Book {
    usage: OrgUsage,
    horizon: crate::domain::credits::CreditHorizon,
    level: Option<BalanceLevel>,
    /// The organization's own low-balance threshold, if it set one.
    threshold: Option<i64>,
}

type Books = HashMap<OrgId, Book>;

fn open_books(
    items: &[UsageItem],
    accounts: HashMap<OrgId, LockedAccount>,
    holds: Vec<CreditHold>,
    posted: Vec<CreditEntry>,
    now: DateTime<Utc>,
) -> Books {
    let mut holds_by_org: HashMap<OrgId, Vec<CreditHold>> = HashMap::new();
    for hold in holds {
        holds_by_org.entry(hold.org_id).or_default().push(hold);
    }
    let mut posted_by_org: HashMap<OrgId, Vec<CreditEntry>> = HashMap::new();
    for entry in posted {
        posted_by_org.entry(entry.org_id).or_default().push(entry);
    }
    // An organization's lock state is the one its newest item was read with.
    let locked: HashMap<OrgId, bool> = items.iter().map(|i| (i.org, i.locked)).collect();
    accounts
        .into_iter()
        .map(|(org, account)| {
            let usage = OrgUsage::new(
                LedgerBook::open(org, account.balance, now),
                holds_by_org.remove(&org).unwrap_or_default(),
                posted_by_org.remove(&org).unwrap_or_default(),
                locked.get(&org).copied().unwrap_or(false),
                now,
            );
            let book = Book {
                usage,
                horizon: account.horizon,
                level: account.balance_level,
                threshold: account.low_balance_threshold,
            };
            (org, book)
        })
        .collect()
}
