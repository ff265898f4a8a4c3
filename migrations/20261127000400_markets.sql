-- Markets: orders, the GPUs bound to asks, trades and the leases trades create.
-- Written by each market's matcher, one transaction per batch of commands.

create table orders (
    order_id         uuid primary key,
    -- Book time order: the matcher inserts a batch's orders in the order it applied them,
    -- and restart rebuilds each book from open orders sorted by this.
    seq              bigint generated always as identity,
    class            text not null,
    side             text not null,
    owner_id         uuid not null references users (user_id),
    status           text not null default 'open',
    tif              text not null,
    gpus             integer not null,
    -- Bids: gpus until filled, then 0. Asks: GPUs still offered.
    gpus_remaining   integer not null,
    -- Limit price in credits per GPU-hour.
    price            numeric(38, 6) not null,
    -- Bids only: longest the buyer may hold the GPUs, and the same in ms as the engine sees it.
    max_hours        numeric(12, 3),
    duration_ms      bigint,
    -- Bids only: the job to run on the GPUs.
    job              jsonb,
    -- Asks only.
    host_id          uuid references hosts (host_id),
    available_until  timestamptz,
    created_at       timestamptz not null default now(),
    closed_at        timestamptz,
    constraint orders_side_valid check (side in ('bid', 'ask')),
    constraint orders_status_valid check (status in ('open', 'filled', 'cancelled', 'expired')),
    constraint orders_tif_valid check (tif in ('gtc', 'ioc')),
    constraint orders_gpus_valid check (gpus between 1 and 64),
    constraint orders_gpus_remaining_valid check (gpus_remaining between 0 and gpus),
    constraint orders_price_positive check (price > 0),
    constraint orders_bid_fields check (side <> 'bid' or (max_hours > 0 and duration_ms > 0 and job is not null)),
    constraint orders_ask_fields check (side <> 'ask' or (host_id is not null and available_until is not null)),
    constraint orders_seq_key unique (seq)
);
create index orders_open_by_class on orders (class, seq) where status = 'open';
create index orders_by_owner on orders (owner_id, seq);
create index orders_by_class on orders (class);

-- GPUs an ask offers. 'bound' while the ask is open and the GPU unsold, 'leased' once a
-- trade put it in a lease (the lease's state then says whether it is in use), 'released'
-- when the ask was cancelled or expired with the GPU unsold.
create table ask_gpus (
    order_id    uuid not null references orders (order_id),
    gpu_uuid    text not null references host_gpus (gpu_uuid),
    state       text not null default 'bound',
    lease_id    uuid,
    primary key (order_id, gpu_uuid),
    constraint ask_gpus_state_valid check (state in ('bound', 'leased', 'released'))
);
-- A GPU is offered by at most one open ask: the database backstop for the matcher's check.
create unique index ask_gpus_one_open_ask on ask_gpus (gpu_uuid) where state = 'bound';

create table trades (
    trade_id    uuid primary key,
    seq         bigint generated always as identity,
    class       text not null,
    bid_id      uuid not null references orders (order_id),
    ask_id      uuid not null references orders (order_id),
    buyer_id    uuid not null references users (user_id),
    seller_id   uuid not null references users (user_id),
    host_id     uuid not null references hosts (host_id),
    gpus        integer not null,
    -- The resting order's price, credits per GPU-hour.
    price       numeric(38, 6) not null,
    max_hours   numeric(12, 3) not null,
    at          timestamptz not null,
    constraint trades_seq_key unique (seq),
    constraint trades_gpus_valid check (gpus between 1 and 64),
    constraint trades_bid_once unique (bid_id)
);
create index trades_by_class on trades (class, seq);
create index trades_by_ask on trades (ask_id);

-- A trade's GPUs on one host for up to max_hours. Placement runs it and settlement bills it
-- from the lease's escrow (ledger escrow account with ref_id = lease_id).
create table leases (
    lease_id     uuid primary key,
    trade_id     uuid not null references trades (trade_id),
    host_id      uuid not null references hosts (host_id),
    gpu_uuids    text[] not null,
    price        numeric(38, 6) not null,
    buyer_id     uuid not null references users (user_id),
    provider_id  uuid not null references users (user_id),
    gpus         integer not null,
    max_hours    numeric(12, 3) not null,
    starts_at    timestamptz not null,
    max_end_at   timestamptz not null,
    job          jsonb not null,
    -- 'pending' until placement starts it; GPUs of a lease in pending/starting/running are in use.
    state        text not null default 'pending',
    created_at   timestamptz not null default now(),
    constraint leases_trade_key unique (trade_id),
    constraint leases_gpus_match check (cardinality(gpu_uuids) = gpus)
);
create index leases_active_by_host on leases (host_id) where state in ('pending', 'starting', 'running');
