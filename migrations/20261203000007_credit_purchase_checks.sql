-- Credit purchases read back from Stripe by reconciliation: a payment Stripe
-- does not know, or one that differs from what we credited, is flagged here
-- (and in the audit trail) for an operator; verified ones are not read again.
create table credit_purchase_checks (
    stripe_payment_id text primary key,
    org_id uuid not null references organizations (id),
    finding text not null check (finding in ('verified', 'unknown_at_stripe', 'mismatch')),
    reason text not null,
    checked_at timestamptz not null
);

create index credit_purchase_checks_flagged on credit_purchase_checks (org_id)
    where finding <> 'verified';
