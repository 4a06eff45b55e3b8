-- Stripe billing: one customer per organization, and the pending changes a
-- subscription carries until its renewal.
alter table organizations add column stripe_customer_id text unique;

alter table subscriptions
    -- Seats drop to this at pending_seats_from (the end of the paid period).
    add column pending_seats bigint check (pending_seats >= 0),
    add column pending_seats_from timestamptz,
    -- A billing-cycle change that a subscription schedule makes at renewal.
    add column pending_cycle text check (pending_cycle in ('monthly', 'yearly')),
    add column pending_cycle_from timestamptz,
    add column pending_cycle_payment_minor bigint,
    add column schedule_id text,
    -- Counts the changes stored; part of the idempotency keys of our Stripe
    -- writes, so a repeated request on a changed subscription is a new call.
    add column version bigint not null default 0,
    add constraint pending_seats_complete
        check ((pending_seats is null) = (pending_seats_from is null)),
    add constraint pending_cycle_complete
        check ((pending_cycle is null) = (pending_cycle_from is null)
           and (pending_cycle is null) = (pending_cycle_payment_minor is null));
