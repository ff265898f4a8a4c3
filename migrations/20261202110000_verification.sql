-- Verification levels (DESIGN section 12): which probe produced a host's GPUs, the
-- proof-of-compute challenges the exchange issues, and confidential-computing evidence.
-- A GPU's level is derived when read: cc_attested while cc_attested_until is ahead,
-- else challenged while challenged_until is ahead, else its backend's base level
-- (nvml: reported, simulated: simulated).

-- Hosts registered before this migration were all reported by NVML or simulated; the
-- inventory did not say which, so they count as NVML (reported), the level that promises
-- nothing beyond the host's word.
alter table hosts
    add column backend text not null default 'nvml',
    -- Failed challenges in a row; reset by a pass or by an operator.
    add column challenge_failures integer not null default 0,
    -- Set when challenge_failures reached CAPEX_CHALLENGE_FAILURES_MAX: no new asks
    -- until an operator clears it.
    add column challenge_blocked_at timestamptz,
    -- When the scheduler next starts a round over this host's GPUs (null: at once).
    add column next_challenge_at timestamptz,
    -- Start of the current round: each GPU not challenged since then gets its turn, one
    -- GPU of the host at a time (the time bound's copy and hash allowance assumes that).
    add column challenge_round_at timestamptz,
    add constraint hosts_backend_valid check (backend in ('nvml', 'simulated'));

alter table host_gpus
    add column challenged_until timestamptz,
    add column cc_attested_until timestamptz,
    -- Whether the CC evidence's measurements were compared with reference values.
    add column cc_measurements_checked boolean,
    -- When the level last changed (pass, failure, attestation), for the views.
    add column verified_at timestamptz,
    -- The chip's identity (hash of its device-identity key) from the first verified CC
    -- evidence: later evidence for this GPU must come from the same chip, and one chip
    -- backs one GPU only (a relay of another host's CC GPU is refused from then on).
    add column cc_device_id text,
    add constraint host_gpus_cc_device_id_key unique (cc_device_id);

create table gpu_challenges (
    challenge_id   uuid primary key,
    host_id        uuid not null references hosts (host_id),
    gpu_uuid       text not null references host_gpus (gpu_uuid),
    class          text not null,
    -- Why it was issued: registration, scheduled, operator.
    reason         text not null,
    seed           bytea not null,
    n              integer not null,
    k              integer not null,
    issued_at      timestamptz not null default now(),
    commit_by      timestamptz not null,
    -- Set when the poll first returned it to the agent.
    delivered_at   timestamptz,
    state          text not null default 'issued',
    root           bytea,
    committed_at   timestamptz,
    rows_asked     integer[],
    answer_by      timestamptz,
    decided_at     timestamptz,
    failure_code   text,
    failure_detail text,
    -- Server time spent verifying the answer, in microseconds.
    verify_us      bigint,
    constraint gpu_challenges_state_valid check (state in ('issued', 'committed', 'passed', 'failed')),
    constraint gpu_challenges_seed_len check (length(seed) = 32),
    constraint gpu_challenges_root_len check (root is null or length(root) = 32)
);
create index gpu_challenges_open on gpu_challenges (host_id) where state in ('issued', 'committed');
create index gpu_challenges_open_gpu on gpu_challenges (gpu_uuid) where state in ('issued', 'committed');
create index gpu_challenges_by_gpu on gpu_challenges (gpu_uuid, issued_at desc);

create table gpu_attestations (
    request_id     uuid primary key,
    host_id        uuid not null references hosts (host_id),
    gpu_uuid       text not null references host_gpus (gpu_uuid),
    nonce          bytea not null,
    requested_at   timestamptz not null default now(),
    answer_by      timestamptz not null,
    delivered_at   timestamptz,
    -- requested, verified, refused (evidence failed a check), unavailable (the agent
    -- says CC is unsupported or off), expired (no answer in time).
    state          text not null default 'requested',
    decided_at     timestamptz,
    code           text,
    detail         text,
    -- What the verifier recorded: leaf subject, chain fingerprint, measurements checked.
    verified       jsonb,
    constraint gpu_attestations_state_valid
        check (state in ('requested', 'verified', 'refused', 'unavailable', 'expired')),
    constraint gpu_attestations_nonce_len check (length(nonce) = 32)
);
create index gpu_attestations_open on gpu_attestations (host_id) where state = 'requested';
create index gpu_attestations_by_gpu on gpu_attestations (gpu_uuid, requested_at desc);

-- What a bid requires of the GPUs it buys (null: nothing beyond the market's rules).
alter table orders
    add column min_verification text,
    add constraint orders_min_verification_valid
        check (min_verification is null or min_verification in ('reported', 'challenged', 'cc_attested'));

-- Refusals of challenge and attestation answers, counted per host and code like reports.
create table host_verification_refusals (
    host_id uuid not null references hosts (host_id),
    code    text not null,
    count   bigint not null default 0,
    primary key (host_id, code)
);
