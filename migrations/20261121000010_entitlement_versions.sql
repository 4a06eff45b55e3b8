-- Entitlement state versions and change notifications.
--
-- Every transaction that changes an input of the entitlement decision takes
-- one new version from a single clock and announces each organization it
-- changed on the `billing_entitlements` channel, as `<org id>:<version>`.
-- The triggers are deferred to commit, so the clock's row lock is held only
-- while the transaction commits: versions follow commit order, and a
-- replica that has seen version v has seen every change up to v.

create table entitlement_clock (
    only_row boolean primary key default true check (only_row),
    version bigint not null
);
insert into entitlement_clock (version) values (0);

-- The version of each organization's last change.
create table entitlement_versions (
    org_id uuid primary key references organizations (id),
    version bigint not null
);
create index entitlement_versions_by_version on entitlement_versions (version);

-- Whether the organization's credits are positive, and until when (null:
-- for good). Kept by the service; it changes far less often than the
-- balance, so usage debits do not announce a change each time.
alter table credit_accounts
    add column credit_positive boolean not null default false,
    add column credit_positive_until timestamptz;

create function announce_entitlement_change() returns trigger
language plpgsql as $$
declare
    row_data jsonb := case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
    org uuid := (row_data ->> tg_argv[0])::uuid;
    taken bigint := nullif(current_setting('billing.state_version', true), '')::bigint;
begin
    -- One version per transaction, however many rows it changed.
    if taken is null then
        update entitlement_clock set version = version + 1 returning version into taken;
        perform set_config('billing.state_version', taken::text, true);
    end if;
    insert into entitlement_versions as v (org_id, version) values (org, taken)
        on conflict (org_id) do update set version = excluded.version;
    perform pg_notify('billing_entitlements', org::text || ':' || taken::text);
    return null;
end;
$$;

create constraint trigger organizations_announce
    after insert or update on organizations
    deferrable initially deferred for each row
    execute function announce_entitlement_change('id');

create constraint trigger memberships_announce
    after insert or update or delete on memberships
    deferrable initially deferred for each row
    execute function announce_entitlement_change('org_id');

create constraint trigger invitations_announce
    after insert or update or delete on invitations
    deferrable initially deferred for each row
    execute function announce_entitlement_change('org_id');

create constraint trigger subscriptions_announce
    after insert or update or delete on subscriptions
    deferrable initially deferred for each row
    execute function announce_entitlement_change('org_id');

create constraint trigger instance_subscriptions_announce
    after insert or update or delete on instance_subscriptions
    deferrable initially deferred for each row
    execute function announce_entitlement_change('org_id');

create constraint trigger credit_accounts_announce
    after update of credit_positive, credit_positive_until on credit_accounts
    deferrable initially deferred for each row
    when (old.credit_positive is distinct from new.credit_positive
          or old.credit_positive_until is distinct from new.credit_positive_until)
    execute function announce_entitlement_change('org_id');
