-- Interruptible capacity (issue 18): cheaper GPUs that yield to on-demand buyers, with notice.

-- An ask's price for interruptible use of its idle GPUs (below its on-demand price), and a
-- bid's priority: on_demand (default) or interruptible.
alter table orders
    add column interruptible_price numeric(38, 6),
    add column priority text not null default 'on_demand',
    add constraint orders_priority_valid check (priority in ('on_demand', 'interruptible')),
    add constraint orders_interruptible_price_valid
        check (interruptible_price is null or (side = 'ask' and interruptible_price > 0 and interruptible_price < price)),
    add constraint orders_priority_side check (priority = 'on_demand' or side = 'bid');

-- A lease made by an interruptible bid holds GPUs that its ask still offers on demand; an
-- on-demand trade that needs them preempts it: the lease becomes 'preempting' (no longer
-- billed from preempted_at, the agent SIGTERMs its job and SIGKILLs it at preempt_deadline)
-- and ends 'preempted' when the job is gone. book_seq is the book's sequence number of the
-- trade, which orders a market's interruptible leases newest-first for preemption.
alter table leases
    add column priority text not null default 'on_demand',
    add column book_seq bigint,
    add column preempted_at timestamptz,
    add column preempt_deadline timestamptz,
    add column preempted_by uuid,
    add constraint leases_priority_valid check (priority in ('on_demand', 'interruptible')),
    add constraint leases_preempted_valid
        check ((preempted_at is null) = (preempt_deadline is null)
               and (preempted_at is null or priority = 'interruptible'));

alter table leases drop constraint leases_state_valid;
alter table leases add constraint leases_state_valid
    check (state in ('pending', 'running', 'preempting', 'exited', 'cancelled', 'max_duration', 'host_lost',
                     'released', 'preempted'));

drop index leases_active_by_host;
create index leases_active_by_host on leases (host_id) where state in ('pending', 'running', 'preempting');
drop index leases_running_past_end;
create index leases_running_past_end on leases (max_end_at) where state in ('pending', 'running', 'preempting');
-- The matcher's load finds the interruptible leases still live on its open asks.
create index leases_interruptible_live on leases (trade_id) where priority = 'interruptible' and state in ('pending', 'running');
