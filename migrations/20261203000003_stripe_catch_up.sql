-- Catch-up from Stripe's Events API. One row: where the last complete
-- listing began (every event Stripe created before it has been listed), and
-- the lease of the replica running one now.
create table stripe_catch_up (
    singleton boolean primary key default true check (singleton),
    listed_until timestamptz,
    leased_until timestamptz not null,
    last_run_at timestamptz,
    last_stored bigint
);

-- How an event reached the inbox: delivered to the webhook, or found by
-- catch-up (its body then rebuilt from the Events API's answer).
alter table stripe_events add column source text not null default 'webhook'
    check (source in ('webhook', 'catch_up'));
