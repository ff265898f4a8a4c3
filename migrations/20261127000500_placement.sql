-- Placement, job runtime and metered settlement (DESIGN section 7).

-- Lease states: pending (sold, not yet started on the host), running (the agent started
-- it), then one final state: exited (the job ended by itself), cancelled (the buyer),
-- max_duration (reached its max hours), host_lost (the host stopped reporting).
alter table leases
    add constraint leases_state_valid
        check (state in ('pending', 'running', 'exited', 'cancelled', 'max_duration', 'host_lost')),
    -- Metering: the lease is billed up to billed_until; billed_ms is the billed time so far,
    -- cost the gross billed (escrow -> provider + fees) and fee the operator's part of it.
    add column billed_until  timestamptz,
    add column billed_ms     bigint not null default 0,
    add column cost          numeric(38, 6) not null default 0,
    add column fee           numeric(38, 6) not null default 0,
    add column acked_at      timestamptz,
    add column started_at    timestamptz,
    add column ended_at      timestamptz,
    add column exit_code     integer,
    -- Next log sequence number the server will give this lease's uploaded output.
    add column log_seq       bigint not null default 0,
    add constraint leases_billed_nonnegative check (billed_ms >= 0 and cost >= 0 and fee >= 0 and fee <= cost);

create index leases_by_buyer on leases (buyer_id, created_at);
create index leases_by_provider on leases (provider_id, created_at);
create index leases_running_past_end on leases (max_end_at) where state in ('pending', 'running');

-- Uploaded job output, in the order the server received it.
create table lease_logs (
    lease_id  uuid not null references leases (lease_id),
    seq       bigint not null,
    stream    text not null,
    text      text not null,
    at        timestamptz not null default now(),
    constraint lease_logs_pkey primary key (lease_id, seq),
    constraint lease_logs_stream_valid check (stream in ('stdout', 'stderr', 'system'))
);

-- Reliability: leases that ended normally (exited, cancelled, max_duration) vs lost.
alter table hosts
    add column leases_completed bigint not null default 0,
    add column leases_lost      bigint not null default 0;
