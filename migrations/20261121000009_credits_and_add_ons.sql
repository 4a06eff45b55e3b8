-- Prepaid credits, credit-funded add-on instances and quantity-billed items.
-- Credit amounts are micro-units of the catalog currency (microdollars).

-- The append-only ledger: every credit and debit, with the balance after it.
create table credit_entries (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    kind text not null
        check (kind in ('grant', 'purchase', 'usage', 'instance_charge', 'expiry', 'adjustment')),
    amount_micros bigint not null,
    balance_after_micros bigint not null,
    -- The caller's key (grants, usage) or ours (instance charges).
    idempotency_key text,
    stripe_payment_id text,
    reason text,
    user_id text,
    model text,
    instance_id text,
    expires_at timestamptz,
    -- For an expiry: the credit that expired.
    expired_entry_id uuid references credit_entries (id),
    occurred_at timestamptz not null
);

create unique index credit_entries_idempotency
    on credit_entries (org_id, kind, idempotency_key) where idempotency_key is not null;
create unique index credit_entries_stripe_payment
    on credit_entries (stripe_payment_id) where stripe_payment_id is not null;
create index credit_entries_by_org on credit_entries (org_id, id);

-- What is left of each credit; debits draw on these, soonest expiry first.
create table credit_lots (
    entry_id uuid primary key references credit_entries (id),
    org_id uuid not null references organizations (id),
    expires_at timestamptz,
    remaining_micros bigint not null check (remaining_micros >= 0)
);

create index credit_lots_open on credit_lots (org_id) where remaining_micros > 0;
create index credit_lots_expiring on credit_lots (expires_at)
    where remaining_micros > 0 and expires_at is not null;

-- One row per organization with credits: the row debits lock, and what the
-- last usage debit overdrew.
create table credit_accounts (
    org_id uuid primary key references organizations (id),
    overdraft_micros bigint not null default 0 check (overdraft_micros >= 0)
);

-- Per-instance add-on subscriptions paid from credits.
create table instance_subscriptions (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    instance_id text not null,
    user_id text not null,
    add_on text not null,
    status text not null check (status in ('trialing', 'active', 'suspended', 'canceled')),
    price_micros bigint not null check (price_micros >= 0),
    -- Set when the subscription began with the add-on's trial.
    trial_end timestamptz,
    current_period_start timestamptz not null,
    current_period_end timestamptz not null,
    cancel_at_period_end boolean not null default false,
    canceled_at timestamptz,
    created_at timestamptz not null
);

create unique index instance_subscriptions_one_live
    on instance_subscriptions (org_id, instance_id) where status <> 'canceled';
create unique index instance_subscriptions_one_trial
    on instance_subscriptions (org_id, user_id, add_on) where trial_end is not null;
create index instance_subscriptions_due
    on instance_subscriptions (current_period_end) where status <> 'canceled';

alter table organizations add column instances_opted_out boolean not null default false;

-- The last count reported for each quantity-billed item, and what Stripe
-- was last set to for it.
create table usage_quantities (
    org_id uuid not null references organizations (id),
    item text not null,
    reported_count bigint not null check (reported_count >= 0),
    reported_at timestamptz not null,
    synced_subscription_id text,
    synced_quantity bigint,
    -- Bumped with each Stripe write, so retries of one write share its key.
    sync_seq bigint not null default 0,
    primary key (org_id, item)
);
