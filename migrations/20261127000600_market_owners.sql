-- Which process matches each market. The owner holds a Postgres advisory lock for the
-- market on a dedicated connection; this row says where it can be reached and carries
-- an epoch that every matcher batch checks, so a process that lost the lock can never
-- commit another batch.
create table market_owners (
    class       text primary key,
    owner_url   text not null,
    epoch       bigint not null default 1,
    updated_at  timestamptz not null default now()
);
