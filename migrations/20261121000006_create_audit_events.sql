-- Every mutation of an organization, written in the transaction of the change.
-- No foreign key: the trail must outlive a deleted organization.
create table audit_events (
    id bigint generated always as identity primary key,
    org_id uuid not null,
    actor text not null,
    action text not null,
    before jsonb,
    after jsonb,
    occurred_at timestamptz not null default now()
);

create index audit_events_by_org on audit_events (org_id, id desc);
