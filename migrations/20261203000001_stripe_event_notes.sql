-- Why an event finished without effect (an event type we do not act on, a
-- subscription Stripe no longer knows), for operators reading the inbox.
alter table stripe_events add column note text;
