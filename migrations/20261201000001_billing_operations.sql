-- Billing changes that touch Stripe, recorded before Stripe is called.
--
-- An operation is written (with the caller's idempotency key, if any) in a
-- short transaction, planned from Stripe's live state, then performed with
-- idempotency keys built from its id; the outcome is written in a second
-- short transaction. No transaction waits on Stripe. A running operation
-- whose claim has lapsed (the process died, or Stripe did not answer) is
-- resumed by the operations loop with the same keys, so Stripe replays
-- instead of repeating.
create table billing_operations (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    kind text not null check (kind in (
        'checkout', 'seat_change', 'cycle_change', 'cancel_cycle_change', 'cancellation',
        'credit_purchase', 'portal_session', 'upkeep')),
    -- Changes of the organization's subscription run one at a time.
    serialized boolean not null,
    status text not null check (status in ('queued', 'running', 'succeeded', 'failed')),
    -- Who asked, as the audit trail names them.
    actor text not null,
    caller_key text check (length(caller_key) between 1 and 128),
    -- The request's parameters, for resuming and for recognising a retry.
    request jsonb not null,
    -- The Stripe requests planned, once planned.
    plan jsonb,
    -- What the caller gets back, once finished.
    result jsonb,
    error text,
    attempts integer not null default 0,
    -- Who is performing it, and until when that claim holds.
    claim_token uuid,
    claimed_until timestamptz,
    created_at timestamptz not null,
    finished_at timestamptz,
    check ((status = 'running') = (claim_token is not null and claimed_until is not null))
);

create unique index billing_operations_one_running
    on billing_operations (org_id) where serialized and status = 'running';
create unique index billing_operations_caller_key
    on billing_operations (org_id, kind, caller_key) where caller_key is not null;
-- Upkeep is idempotent, so one waiting per organization is enough.
create unique index billing_operations_one_queued_upkeep
    on billing_operations (org_id) where kind = 'upkeep' and status = 'queued';
create index billing_operations_lapsed
    on billing_operations (claimed_until) where status = 'running';
create index billing_operations_queued
    on billing_operations (created_at) where status = 'queued';

-- Checkout sessions this service opened, to find the open one of an
-- organization (at most one subscription session is open at a time).
create table checkout_sessions (
    stripe_session_id text primary key,
    org_id uuid not null references organizations (id),
    operation_id uuid not null references billing_operations (id),
    mode text not null check (mode in ('subscription', 'payment')),
    -- The request it was opened for: the same request again reuses it.
    request text not null,
    url text not null,
    status text not null check (status in ('open', 'complete', 'expired')),
    created_at timestamptz not null
);

create index checkout_sessions_by_org on checkout_sessions (org_id, created_at desc)
    where mode = 'subscription';

-- Whoever paid is recorded; paying changes nobody's role.
alter table subscriptions add column purchaser_user_id text;

-- Keys now come from operations, not from counts of stored changes or writes.
alter table subscriptions drop column version;
alter table usage_quantities drop column sync_seq;

-- Syncs read Stripe with no transaction open, so two may finish in either
-- order. Each takes a ticket before reading; only the newest ticket's
-- reading is stored, so a slower, older reading never overwrites a newer.
create table subscription_sync_tickets (
    stripe_subscription_id text primary key,
    issued bigint not null
);
