-- The expiry indexes serve one query, the periodic prune (`expires_at < now() - ...`), while
-- every code and every refresh token (one per rotation) paid for an entry in a B-tree. Rows are
-- written in about the order they expire, which is what a BRIN index summarizes: a few pages
-- for the whole table, and nothing to write for a row that lands in a range not yet summarized.
DROP INDEX refresh_tokens_expires_at;
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens USING brin (expires_at);
DROP INDEX authorization_codes_expires_at;
CREATE INDEX authorization_codes_expires_at ON authorization_codes USING brin (expires_at);
