-- Live-feed events too large for a NOTIFY payload (8000 bytes): the notification carries
-- the row id and each replica reads the event from here. Rows are only needed until every
-- listener has read them, so the publisher deletes those older than a minute.
create table feed_spill (
    id          bigserial primary key,
    event       text not null,
    created_at  timestamptz not null default now()
);
