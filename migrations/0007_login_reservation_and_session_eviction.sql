-- Login attempts are reserved before the password is checked, so parallel guesses cannot all be
-- evaluated before the first failure is counted; and a credential change evicts the account's
-- browser sessions.

-- Failed (or in-flight) logins per source in the current window, across all accounts: the flood
-- limit. One row per source, so concurrent reservations from one source serialize on it.
CREATE TABLE login_sources (
    source       inet        PRIMARY KEY,
    attempts     integer     NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now()
);

-- Reserve one login attempt for (account, source): NULL when it may proceed (the attempt is then
-- counted as a failure until tessera_login_release forgets it), else the time until which the
-- pair or the source is refused. Rows are locked source first, then pair, by every caller.
--
-- The pair's block is set when the attempt that reaches p_max is reserved, not when it fails:
-- that is what keeps the attempts evaluated at p_max however many arrive at once. A pair's
-- count starts afresh after a day without attempts; the source's after p_source_window.
CREATE FUNCTION tessera_login_reserve(
    p_account text, p_source inet, p_max integer, p_source_max integer,
    p_source_window interval, p_max_block interval
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    src login_sources%ROWTYPE;
    pair login_failures%ROWTYPE;
    n integer;
BEGIN
    INSERT INTO login_sources (source) VALUES (p_source) ON CONFLICT (source) DO NOTHING;
    SELECT * INTO src FROM login_sources WHERE source = p_source FOR UPDATE;
    IF src.window_start <= now() - p_source_window THEN
        src.attempts := 0;
        src.window_start := now();
    END IF;
    IF src.attempts >= p_source_max THEN
        RETURN src.window_start + p_source_window;
    END IF;

    INSERT INTO login_failures (account, source, failures) VALUES (p_account, p_source, 0)
        ON CONFLICT (account, source) DO NOTHING;
    SELECT * INTO pair FROM login_failures WHERE account = p_account AND source = p_source FOR UPDATE;
    IF pair.blocked_until > now() THEN
        RETURN pair.blocked_until;
    END IF;
    n := CASE WHEN pair.last_failure_at < now() - interval '1 day' THEN 1 ELSE pair.failures + 1 END;
    UPDATE login_failures
       SET failures = n,
           last_failure_at = now(),
           -- 1, 2, 4, ... seconds from the p_max-th attempt on, at most p_max_block.
           blocked_until = CASE WHEN n >= p_max
               THEN now() + least(p_max_block, make_interval(secs => power(2, least(n - p_max, 30))))
           END
     WHERE account = p_account AND source = p_source;
    UPDATE login_sources SET attempts = src.attempts + 1, window_start = src.window_start
     WHERE source = p_source;
    RETURN NULL;
END $$;

-- A successful login: the pair's failures are forgotten and the source's reservation returned.
-- Locks in the same order as tessera_login_reserve (source, then pair), so the two never deadlock.
CREATE FUNCTION tessera_login_release(p_account text, p_source inet) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE login_sources SET attempts = greatest(attempts - 1, 0) WHERE source = p_source;
    DELETE FROM login_failures WHERE account = p_account AND source = p_source;
END $$;

-- Bumped by every password change and by disabling the account: a session signed in under an
-- older generation is void, even one created by a login that raced the change.
ALTER TABLE users ADD COLUMN session_generation integer NOT NULL DEFAULT 0;

-- The signed-in user of a session, so a credential change can delete that user's sessions.
ALTER TABLE sessions ADD COLUMN user_id uuid;
UPDATE sessions SET user_id = (data -> 'user' ->> 'id')::uuid WHERE data ? 'user';
CREATE INDEX sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
