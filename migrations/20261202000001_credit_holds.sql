-- Credit holds: an estimate set aside before a long model request, settled
-- by the request's usage report (the actual cost is debited, the rest
-- released) or released by the background loop after its expiry. What may
-- be reserved is the balance less the active holds; every hold is written
-- under the organization's credit account lock, like every debit.
create table credit_holds (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    amount_micros bigint not null check (amount_micros > 0),
    idempotency_key text not null,
    user_id text not null,
    model text,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    status text not null check (status in ('active', 'settled', 'released', 'expired')),
    -- The usage report that settled or released it.
    settled_by_key text,
    closed_at timestamptz,
    check ((status = 'active') = (closed_at is null))
);
create unique index credit_holds_idempotency on credit_holds (org_id, idempotency_key);
create index credit_holds_active on credit_holds (org_id) where status = 'active';
create index credit_holds_expiring on credit_holds (expires_at) where status = 'active';

-- A usage debit that settled a hold names it.
alter table credit_entries add column hold_id uuid references credit_holds (id);
