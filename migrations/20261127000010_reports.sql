-- Accepted usage reports, report health per host, and what the latest report said
-- about each GPU beyond the columns of 20261127000002_hosts.sql.

-- Every accepted report, kept as the exact signed bytes so it can be re-verified later.
create table host_reports (
    host_id       uuid not null references hosts (host_id),
    seq           bigint not null,
    sent_at       timestamptz not null,
    measured_at   timestamptz not null,
    received_at   timestamptz not null default now(),
    -- The verified payload bytes (JSON) and the signature over 'capex/report/v1' || payload.
    payload       bytea not null,
    signature     bytea not null,
    constraint host_reports_pkey primary key (host_id, seq)
);
create index host_reports_host_measured on host_reports (host_id, measured_at);

-- Report health: how many reports each host had accepted, and refused by code.
create table host_report_counts (
    host_id  uuid not null references hosts (host_id),
    -- 'accepted' or a refusal code such as 'invalid_signature'.
    code     text not null,
    count    bigint not null default 0,
    last_at  timestamptz not null default now(),
    constraint host_report_counts_pkey primary key (host_id, code)
);

alter table host_gpus
    -- All compute processes on the GPU in the latest report (lease and foreign ones).
    add column processes integer not null default 0;
