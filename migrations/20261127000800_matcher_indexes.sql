-- Indexes for the matcher's batches, which write every order and read every ask host.

-- An ask host's free GPUs of one class: with only (host_id) and (class) indexes, the
-- planner (statistics taken while host_gpus was nearly empty) read every GPU of the class
-- and filtered by host. One index on both finds just the host's GPUs of that class; it also
-- serves every lookup by host_id alone, which makes the (host_id) index redundant.
create index host_gpus_by_host_and_class on host_gpus (host_id, class);
drop index host_gpus_host;

-- Index entries that every order paid for and no query reads:
-- - orders by class: open orders are found through orders_open_by_class, a market's
--   summary through market_owners;
-- - orders' seq is an identity column ("generated always"): unique by construction;
-- - journal idempotency keys: only transfers made through the ledger API carry one, yet
--   every matcher journal row put a NULL into the unique index. The partial index keeps
--   the same name (the ledger recognises a reused key by it) and the same rule.
drop index orders_by_class;
alter table orders drop constraint orders_seq_key;
alter table journal drop constraint journal_idempotency_key_key;
create unique index journal_idempotency_key_key on journal (idempotency_key) where idempotency_key is not null;
