-- The subscription an event only asks us to read again, set when it is
-- stored: one reading of the subscription covers every such event stored
-- before it began, so a worker finishes them together (coalescing).
alter table stripe_events add column subscription_id text;
create index stripe_events_pending_by_subscription on stripe_events (subscription_id)
    where state = 'pending' and subscription_id is not null;
