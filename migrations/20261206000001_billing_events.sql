-- Lifecycle events out to the product: a transactional outbox, the
-- operators' webhook endpoints and the deliveries to them.
--
-- An event is a row of `billing_events`, inserted by the change it reports
-- in that change's own transaction, so it exists if and only if the change
-- committed. When the transaction commits, the event takes the entitlement
-- state version the transaction commits at (taking one if the change did
-- not). Versions follow commit order, so (state_version, seq) orders every
-- event by commit: a reader that has seen an event has seen every event
-- before it, and a stream resumed after it misses none. A version taken
-- for events alone changes no organization's entitlement state; the
-- service announces it with the version only (`:<version>`, see
-- `store::commit`), so replicas move on without reading anything again.

-- The version-taking part of announce_entitlement_change, shared with the
-- events' stamp: one version per transaction.
create function take_state_version() returns bigint
language plpgsql as $$
declare
    taken bigint := nullif(current_setting('billing.state_version', true), '')::bigint;
begin
    if taken is null then
        update entitlement_clock set version = version + 1 returning version into taken;
        perform set_config('billing.state_version', taken::text, true);
    end if;
    return taken;
end;
$$;

-- Announces that the organization changed at this transaction's version,
-- and notes that the transaction announced one.
create function announce_org_change(org uuid) returns bigint
language plpgsql as $$
declare
    taken bigint := take_state_version();
begin
    insert into entitlement_versions as v (org_id, version) values (org, taken)
        on conflict (org_id) do update set version = excluded.version;
    perform pg_notify('billing_entitlements', org::text || ':' || taken::text);
    perform set_config('billing.announced', 'true', true);
    return taken;
end;
$$;

create or replace function announce_entitlement_change() returns trigger
language plpgsql as $$
declare
    row_data jsonb := case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
begin
    perform announce_org_change((row_data ->> tg_argv[0])::uuid);
    return null;
end;
$$;

create table billing_events (
    -- UUIDv7: the webhook-id of every delivery of the event.
    id uuid primary key,
    -- Insertion order, which within one transaction is the order of its events.
    seq bigint generated always as identity,
    -- Null only for events about the service itself (webhook_endpoint.*).
    org_id uuid,
    type text not null,
    occurred_at timestamptz not null,
    -- Stamped at commit (billing_events_stamp); never null once visible.
    state_version bigint,
    -- The event's data: the proto3 JSON of its `BillingEvent.data` member.
    data jsonb not null,
    -- The user ids and email addresses the data names, for erasure.
    names text[] not null default '{}'
);
create index billing_events_in_commit_order on billing_events (state_version, seq);
create index billing_events_by_time on billing_events (occurred_at);
create index billing_events_naming on billing_events using gin (names);

create function stamp_billing_event() returns trigger
language plpgsql as $$
begin
    update billing_events set state_version = take_state_version() where id = new.id;
    return null;
end;
$$;

create constraint trigger billing_events_stamp
    after insert on billing_events
    deferrable initially deferred for each row
    execute function stamp_billing_event();

-- What was last announced about each organization, so each announcement is
-- made once: the last trial stage the background loop considered for the
-- current trial end (announced, or passed while a subscription decided
-- access) and when the stage may next change (null: never again); and
-- whether it was last announced as over its seats. A table of its own, so
-- these writes do not count as entitlement changes. Organizations that
-- exist already are looked at once, at the next pass.
create table org_notices (
    org_id uuid primary key references organizations (id),
    trial_stage_considered text,
    trial_stage_check_at timestamptz,
    over_seats_announced boolean not null default false
);
create index org_notices_trial_due on org_notices (trial_stage_check_at)
    where trial_stage_check_at is not null;
insert into org_notices (org_id, trial_stage_check_at)
    select id, now() from organizations where deleted_at is null;

-- Low-balance alerts: the organization's own threshold (null: the
-- catalog's) and the balance level last announced (null: not yet looked at;
-- the first posting sets it without announcing anything).
alter table credit_accounts
    add column low_balance_threshold_micros bigint check (low_balance_threshold_micros >= 0),
    add column balance_level text check (balance_level in ('healthy', 'low', 'exhausted'));

create table webhook_endpoints (
    id uuid primary key,
    url text not null,
    description text not null default '',
    -- Event types delivered; empty delivers every type.
    event_types text[] not null default '{}',
    -- Deliveries in flight at once, across replicas.
    max_in_flight integer not null check (max_in_flight between 1 and 64),
    -- Signing secrets (whsec_...): needed in the clear to sign; never logged.
    secret text not null,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    -- Null while deliveries run.
    paused_at timestamptz,
    paused_reason text,
    -- The first failure since the last success; null while succeeding.
    failing_since timestamptz,
    last_error text,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

-- Whether an endpoint's filter takes an event type: the one place this rule
-- is written (fan-out and replay both use it).
create function endpoint_takes(event_types text[], event_type text) returns boolean
language sql immutable as $$
    select cardinality(event_types) = 0 or event_type = any(event_types)
$$;

-- Deliveries to one endpoint of one organization's events go out one at a
-- time, in event order: a lane. A worker claims a lane (a lease, so a dead
-- worker's lane is taken over) and sends its pending deliveries in order.
create table webhook_lanes (
    endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
    -- The organization; the nil UUID for events without one.
    org_key uuid not null,
    -- When the lane's first pending delivery is due; null when none is pending.
    due_at timestamptz,
    claimed_by uuid,
    claimed_until timestamptz,
    primary key (endpoint_id, org_key)
);
create index webhook_lanes_due on webhook_lanes (endpoint_id, due_at) where due_at is not null;

create table webhook_deliveries (
    -- In the order deliveries were queued.
    id bigint generated always as identity primary key,
    endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
    event_id uuid not null references billing_events (id) on delete cascade,
    org_key uuid not null,
    replay boolean not null default false,
    state text not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    created_at timestamptz not null,
    -- The first attempt of the current retry schedule (reset on resume).
    first_attempt_at timestamptz,
    next_attempt_at timestamptz not null,
    attempts integer not null default 0
);
create index webhook_deliveries_pending on webhook_deliveries (endpoint_id, org_key)
    where state = 'pending';
create index webhook_deliveries_by_endpoint on webhook_deliveries (endpoint_id, id);
create index webhook_deliveries_by_event on webhook_deliveries (event_id);

create table webhook_attempts (
    delivery_id bigint not null references webhook_deliveries (id) on delete cascade,
    attempt integer not null,
    attempted_at timestamptz not null,
    -- Null when no answer came back.
    http_status integer,
    -- Why it failed; null on success. Never the response body.
    error text,
    duration_ms integer not null,
    primary key (delivery_id, attempt)
);
