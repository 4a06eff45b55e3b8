-- Local state of the organization's Stripe subscriptions. The status is stored
-- exactly as Stripe reports it.
create table subscriptions (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    stripe_subscription_id text not null unique,
    status text not null,
    plan text not null,
    billing_cycle text check (billing_cycle in ('monthly', 'yearly')),
    paid_seats bigint not null check (paid_seats >= 0),
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean not null default false,
    ended_at timestamptz,
    next_payment_minor bigint,
    currency text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index subscriptions_by_org on subscriptions (org_id, created_at);
