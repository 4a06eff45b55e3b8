-- The Stripe webhook inbox. An event is stored here, keyed by Stripe's event
-- id, before the ingress answers 200; workers apply it later in their own
-- transactions. Redelivered events hit the primary key and change nothing.
create table stripe_events (
    id text primary key,
    event_type text not null,
    -- The body exactly as Stripe sent it.
    raw_body text not null,
    stripe_created_at timestamptz not null,
    received_at timestamptz not null default now(),
    state text not null default 'pending'
        check (state in ('pending', 'applied', 'no_effect', 'parked')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error text,
    finished_at timestamptz
);

-- Workers claim due pending events; operators list parked ones.
create index stripe_events_due on stripe_events (next_attempt_at) where state = 'pending';
create index stripe_events_parked on stripe_events (received_at) where state = 'parked';
