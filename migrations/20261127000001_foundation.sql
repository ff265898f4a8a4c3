-- Users, API keys, the credit ledger and HTTP idempotency records.

create table users (
    user_id       uuid primary key,
    email         text not null,
    password_hash text not null,
    roles         text[] not null,
    created_at    timestamptz not null default now(),
    constraint users_email_key unique (email),
    constraint users_roles_valid check (roles <@ array['buyer', 'provider', 'operator']::text[] and cardinality(roles) > 0)
);

create table api_keys (
    api_key_id  uuid primary key,
    user_id     uuid not null references users (user_id),
    name        text not null,
    -- First characters of the key, shown in listings so a user can tell keys apart.
    prefix      text not null,
    -- sha256 of the full key: keys are 256-bit random, so a fast hash is enough.
    key_hash    text not null,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz,
    constraint api_keys_key_hash_key unique (key_hash)
);

create table accounts (
    account_id  uuid primary key,
    kind        text not null,
    -- Owner of a wallet or escrow; null for the operator's treasury and fees.
    user_id     uuid references users (user_id),
    -- The order or lease an escrow account holds credits for.
    ref_id      uuid,
    balance     numeric(38, 6) not null default 0,
    created_at  timestamptz not null default now(),
    constraint accounts_kind_valid check (kind in ('treasury', 'fees', 'wallet', 'escrow')),
    -- Only the treasury may go below zero: minting is treasury -> wallet.
    constraint accounts_balance_nonnegative check (kind = 'treasury' or balance >= 0),
    constraint accounts_owner_matches_kind check ((kind in ('treasury', 'fees')) = (user_id is null))
);
create unique index accounts_one_treasury on accounts (kind) where kind in ('treasury', 'fees');
create unique index accounts_one_wallet_per_user on accounts (user_id) where kind = 'wallet';
create unique index accounts_one_escrow_per_ref on accounts (ref_id) where kind = 'escrow';

-- The journal: one row per transfer, append-only. A balance is the sum of the rows that
-- credit the account minus the rows that debit it.
create table journal (
    entry_id         bigserial primary key,
    transfer_id      uuid not null,
    debit_account    uuid not null references accounts (account_id),
    credit_account   uuid not null references accounts (account_id),
    amount           numeric(38, 6) not null,
    kind             text not null,
    memo             text not null default '',
    idempotency_key  text,
    created_at       timestamptz not null default now(),
    constraint journal_transfer_id_key unique (transfer_id),
    constraint journal_idempotency_key_key unique (idempotency_key),
    constraint journal_amount_positive check (amount > 0),
    constraint journal_distinct_accounts check (debit_account <> credit_account)
);
create index journal_debit_account on journal (debit_account, entry_id);
create index journal_credit_account on journal (credit_account, entry_id);

create function journal_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'journal is append-only: % is not allowed', tg_op
        using errcode = 'restrict_violation';
end;
$$;
create trigger journal_no_update_delete before update or delete on journal
    for each row execute function journal_is_append_only();
create trigger journal_no_truncate before truncate on journal
    for each statement execute function journal_is_append_only();

insert into accounts (account_id, kind) values
    ('00000000-0000-0000-0000-000000000001', 'treasury'),
    ('00000000-0000-0000-0000-000000000002', 'fees');

-- A request made with an Idempotency-Key is stored with its response in the same
-- transaction as its effects, so a retry returns the first answer and moves nothing.
create table idempotency (
    user_id          uuid not null references users (user_id),
    idempotency_key  text not null,
    request_hash     text not null,
    response_status  smallint not null,
    response_body    jsonb not null,
    created_at       timestamptz not null default now(),
    primary key (user_id, idempotency_key)
);
