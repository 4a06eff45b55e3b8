-- Usage debits update a lot's remaining credit on every commit. The lot
-- indexes' predicate named `remaining_micros`, which made each of those
-- updates a non-HOT one: a new index entry per update, every one but the
-- newest dead, and an organization's lookup of its open lots walked
-- thousands of them until vacuum came by. The predicate now names `open`,
-- which changes once in a lot's life (when it runs out), so the updates
-- stay on their page (HOT) and the indexes still hold open lots only.
alter table credit_lots add column open boolean generated always as (remaining_micros > 0) stored;
drop index credit_lots_open;
create index credit_lots_open on credit_lots (org_id) where open;
drop index credit_lots_expiring;
create index credit_lots_expiring on credit_lots (expires_at) where open and expires_at is not null;

-- Room on each page for the new versions that HOT updates write there.
alter table credit_lots set (fillfactor = 50);
alter table credit_accounts set (fillfactor = 50);
