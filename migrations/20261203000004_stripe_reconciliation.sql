-- Periodic reconciliation with Stripe: one row, the lease of the replica
-- running a pass now (so replicas do not all read every subscription).
create table stripe_reconciliation (
    singleton boolean primary key default true check (singleton),
    leased_until timestamptz not null,
    last_run_at timestamptz
);
