-- Retried operator calls must not act twice. CreateWebhookEndpoint with an
-- idempotency key answers the endpoint the first call made (a second
-- endpoint would receive every event again). RotateWebhookEndpointSecret
-- with the key of the endpoint's last rotation answers that rotation (a
-- second rotation would retire the secret receivers still verify with).
alter table webhook_endpoints
    add column creation_idempotency_key text,
    add column last_rotation_key text,
    add constraint webhook_endpoints_creation_idempotency_key unique (creation_idempotency_key);
