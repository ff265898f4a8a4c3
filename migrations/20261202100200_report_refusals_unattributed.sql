-- Report refusals that are not proven to come from the host in the URL (before its
-- signature verified: a bad envelope, an unknown host, a bad signature). Counted here by
-- code, for the operator, and never on the host, whose owner would read them as its own.
create table report_refusals_unattributed (
    code     text primary key,
    count    bigint not null default 0,
    last_at  timestamptz not null default now()
);
