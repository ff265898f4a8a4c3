-- Nonces of signed host requests (capex/host-request/v2), kept for the clock-skew window so
-- a captured request sent again is refused (host_request_replayed) instead of applied twice.
create table host_request_nonces (
    host_id     uuid not null references hosts (host_id),
    -- The 16 bytes of the request's x-capex-host-nonce header.
    nonce       bytea not null,
    -- Server time the request was accepted; rows older than twice the skew window can no
    -- longer match an acceptable request and are pruned as the host sends new ones.
    created_at  timestamptz not null default now(),
    constraint host_request_nonces_pkey primary key (host_id, nonce),
    constraint host_request_nonces_nonce_length check (length(nonce) = 16)
);
