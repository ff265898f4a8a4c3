-- Managed jobs (issue 17): a job is the buyer's unit, each lease one attempt of it.
--
-- A job's id is the order id of the bid that submitted it. The id and the attempt number
-- travel inside the stored job spec (`orders.job`, copied by the matcher into
-- `leases.job`), so the matcher needs no new columns; generated columns expose them.

update orders set job = job || jsonb_build_object('job_id', order_id, 'attempt', 1)
where side = 'bid' and job is not null and not job ? 'job_id';
update leases l set job = l.job || jsonb_build_object('job_id', t.bid_id, 'attempt', 1)
from trades t where t.trade_id = l.trade_id and not l.job ? 'job_id';

alter table orders
    add column job_id uuid generated always as ((job ->> 'job_id')::uuid) stored;
alter table leases
    add column job_id uuid generated always as ((job ->> 'job_id')::uuid) stored,
    add column attempt integer generated always as ((job ->> 'attempt')::integer) stored;
create index orders_by_job on orders (job_id) where job_id is not null;
create index leases_by_job on leases (job_id, attempt);

-- What the exchange remembers of a job beyond its leases: written when an attempt of a
-- job with a restart policy ends (the next attempt, or why the job gave up).
create table jobs (
    job_id         uuid primary key,
    owner_id       uuid not null references users (user_id),
    class          text not null,
    -- active (an attempt runs, or the next one waits to be placed or filled), gave_up, ended.
    state          text not null default 'active',
    -- The last attempt the exchange placed a bid for.
    attempt        integer not null,
    -- The job never runs past this: the first attempt's max end.
    deadline       timestamptz not null,
    -- The bid of attempt `attempt` while it is placed by the exchange (`next_state`
    -- placing: funded, not yet in the book; sending: handed to the matcher; waiting: in
    -- the book), with what the matcher needs to place it.
    next_order_id  uuid,
    next_state     text,
    next_bid       jsonb,
    end_reason     text,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    constraint jobs_state_valid check (state in ('active', 'gave_up', 'ended')),
    constraint jobs_next_state_valid check (next_state in ('placing', 'sending', 'waiting'))
);
create index jobs_next_pending on jobs (next_state) where next_state is not null;

-- SLA credit paid to the buyer when the lease was lost to a silent host (issue 17, part 2):
-- CAPEX_SLA_CREDIT_RATE x what the lease had billed, from the provider's wallet as far as
-- it covers.
alter table leases add column sla_credit numeric(38, 6) not null default 0;
alter table hosts add column sla_credits_paid numeric(38, 6) not null default 0;
