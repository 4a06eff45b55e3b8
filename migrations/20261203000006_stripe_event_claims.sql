-- Until when a worker holds an event it claimed. While one event of a
-- subscription is held, workers claim other subscriptions' events: the
-- holder's reading will cover the rest (coalescing), and several workers
-- reading one subscription at once would only repeat the same request.
alter table stripe_events add column claimed_until timestamptz;
