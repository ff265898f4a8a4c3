-- API keys: when each was last used (updated at most once a minute per key).
alter table api_keys add column last_used_at timestamptz;
create index api_keys_user on api_keys (user_id, created_at);
