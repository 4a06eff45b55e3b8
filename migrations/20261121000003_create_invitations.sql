create table invitations (
    id uuid primary key,
    org_id uuid not null references organizations (id),
    email text not null check (email = lower(email)),
    role text not null check (role in ('owner', 'billing_manager', 'member')),
    invited_by text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    accepted_at timestamptz,
    accepted_by text,
    revoked_at timestamptz,
    check (accepted_at is null or revoked_at is null)
);

-- One open invitation per address and organization; expired ones are closed
-- (revoked) before a new invitation to the same address is written.
create unique index invitations_one_open_per_email
    on invitations (org_id, email)
    where accepted_at is null and revoked_at is null;

create index invitations_by_org on invitations (org_id, created_at);
