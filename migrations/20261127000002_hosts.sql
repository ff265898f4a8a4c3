-- Provider hosts, their GPUs and the signed usage reports that attest them.

create table hosts (
    host_id            uuid primary key,
    owner_id           uuid not null references users (user_id),
    name               text not null,
    -- The host's ed25519 public key (32 bytes); reports are verified against it.
    public_key         bytea not null,
    status             text not null default 'active',
    report_interval_s  integer not null default 10,
    -- Highest report sequence number accepted so far (-1: none yet).
    last_seq           bigint not null default -1,
    -- sha256 of the last accepted payload bytes: the same bytes again are a harmless no-op.
    last_payload_sha256 bytea,
    -- Server time when the last valid report arrived; liveness is measured from it.
    last_report_at     timestamptz,
    driver_version     text,
    cuda_version       text,
    created_at         timestamptz not null default now(),
    constraint hosts_public_key_key unique (public_key),
    constraint hosts_status_valid check (status in ('active', 'disabled')),
    constraint hosts_report_interval_valid check (report_interval_s between 1 and 3600)
);
create index hosts_owner on hosts (owner_id);

create table host_gpus (
    -- NVML's GPU UUID; one GPU belongs to one host only.
    gpu_uuid          text primary key,
    host_id           uuid not null references hosts (host_id),
    -- Position on the host (NVML index), used to order GPUs consistently.
    gpu_index         integer not null,
    name              text not null,
    -- Market class derived from the NVML name and memory, e.g. H100-80GB.
    class             text not null,
    memory_total_mib  bigint not null,
    pci_bus_id        text,
    -- Latest attested state, from the latest valid report.
    utilization_pct   integer,
    memory_used_mib   bigint,
    power_mw          bigint,
    energy_mj         bigint,
    temperature_c     integer,
    -- Compute processes on this GPU that do not belong to a Capex lease.
    foreign_processes integer not null default 0,
    last_seen_at      timestamptz,
    constraint host_gpus_host_index_key unique (host_id, gpu_index)
);
create index host_gpus_host on host_gpus (host_id);
create index host_gpus_class on host_gpus (class);
