-- A job can steer itself (issue 17, part 4): a running attempt may release its GPUs early
-- (lease state `released`, never restarted), and may place child bids paid from its owner's
-- wallet within the job's budget. A child's job spec carries `parent_job_id` (stamped by the
-- server, never taken from the request), copied like `job_id` into its restart bids and
-- leases; generated columns expose it for the budget sum and the parent's view.
alter table leases drop constraint leases_state_valid;
alter table leases add constraint leases_state_valid
    check (state in ('pending', 'running', 'exited', 'cancelled', 'max_duration', 'host_lost', 'released'));

alter table orders
    add column parent_job_id uuid generated always as ((job ->> 'parent_job_id')::uuid) stored;
alter table leases
    add column parent_job_id uuid generated always as ((job ->> 'parent_job_id')::uuid) stored;
create index orders_by_parent_job on orders (parent_job_id) where parent_job_id is not null;
create index leases_by_parent_job on leases (parent_job_id) where parent_job_id is not null;
