-- Kept after a member is removed so that a later Stripe event cannot re-add
-- the user as owner; accepting a new invitation deletes it.
create table removal_records (
    org_id uuid not null references organizations (id),
    user_id text not null,
    removed_at timestamptz not null,
    removed_by text not null,
    previous_role text not null check (previous_role in ('owner', 'billing_manager', 'member')),
    primary key (org_id, user_id)
);

create index removal_records_by_user on removal_records (user_id);
create index removal_records_by_remover on removal_records (removed_by);
