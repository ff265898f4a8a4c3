-- Bids that require reliable hosts (issue 17, section 2).

-- A bid's floor on its ask's host's 7-day uptime, in parts per million (null: none).
alter table orders
    add column min_uptime_7d_ppm integer,
    add constraint orders_min_uptime_7d_ppm_valid
        check (min_uptime_7d_ppm is null or (side = 'bid' and min_uptime_7d_ppm between 0 and 1000000));

-- THE definition of a host's attested uptime, in parts per million of the window that
-- ends now and starts `window_s` seconds before, or when the host registered if later.
-- The time between consecutive reports (by their signed measured_at) counts as up when
-- the gap is at most 2 report intervals, as down otherwise; the time since the last report
-- counts the same way up to now. Rounded down. The reliability endpoint, the checks that
-- grade an ask, the book's load and the matcher's regrade all call this, so they agree.
-- Cost: one index range scan of host_reports_host_measured over the window.
create function host_uptime_ppm(p_host_id uuid, p_window_s float8) returns integer
language sql stable as $$
    with h as (
        select report_interval_s * 2.0 as gap_max_s,
               least(p_window_s, greatest(extract(epoch from now() - created_at)::float8, 0)) as observed_s
        from hosts where host_id = p_host_id
    ), g as (
        select measured_at as t,
               extract(epoch from measured_at - lag(measured_at) over (order by measured_at))::float8 as gap_s
        from host_reports
        where host_id = p_host_id and measured_at >= now() - make_interval(secs => p_window_s)
    ), s as (
        select coalesce(sum(g.gap_s) filter (where g.gap_s <= h.gap_max_s), 0) as up_s,
               greatest(extract(epoch from now() - max(g.t))::float8, 0) as tail_s
        from g, h
    )
    select case when h.observed_s <= 0 then 0
                else floor(1000000 * least(1.0, greatest(0.0,
                    (s.up_s + case when s.tail_s <= h.gap_max_s then s.tail_s else 0 end) / h.observed_s)))::integer
           end
    from h, s
$$;
