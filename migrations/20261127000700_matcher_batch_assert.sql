-- A matcher batch sends its write statement and COMMIT in one round trip. The statement
-- compares the rows it touched with the rows the batch meant to touch; any difference (the
-- matcher's copy of the market is not what the database holds) must fail the statement, so
-- that the COMMIT behind it never runs and the transaction rolls back.
create function matcher_assert_written(written bigint[], expected bigint[]) returns void
language plpgsql as $$
begin
    if written is distinct from expected then
        raise exception 'batch wrote % rows where it meant %: the matcher''s copy of the market differs from the database',
            written, expected
            using errcode = 'P0001';
    end if;
end
$$;
