-- Organizations are soft-deleted (deleted_at) so their audit trail outlives them.
create table organizations (
    id uuid primary key,
    name text not null check (length(name) between 1 and 100),
    plan text not null,
    trial_end timestamptz not null,
    require_seats boolean not null default true,
    sponsorship_tier text check (sponsorship_tier <> ''),
    suppress_trial_messaging boolean not null default false,
    model_deny_list text[] not null default '{}',
    provider_allow_list text[] not null default '{}',
    creator_user_id text not null,
    -- Lets a retried CreateOrganization return the organization of the first call.
    creation_idempotency_key text,
    created_at timestamptz not null default now(),
    deleted_at timestamptz,
    constraint organizations_creation_idempotency_key unique (creator_user_id, creation_idempotency_key)
);

create index organizations_live_by_id on organizations (id) where deleted_at is null;
