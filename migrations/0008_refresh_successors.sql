-- A rotated refresh token remembers the digest of its successor, so a retried or concurrent
-- refresh within the reuse grace window can be answered with the same successor (which is
-- derived again from the presented token, never stored) instead of revoking the grant.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash bytea CHECK (length(successor_hash) = 32);
