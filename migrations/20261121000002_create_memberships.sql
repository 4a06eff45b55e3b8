create table memberships (
    org_id uuid not null references organizations (id),
    user_id text not null,
    role text not null check (role in ('owner', 'billing_manager', 'member')),
    joined_at timestamptz not null default now(),
    primary key (org_id, user_id)
);

-- DeleteUserData finds every membership of one user.
create index memberships_by_user on memberships (user_id);
