-- Migration 0007's login throttle functions. Since commit 47a9db5 the throttle reserves and
-- releases an attempt with one plain statement each (src/store/login_throttle.rs) and nothing
-- calls these; only an instance of an older build, still running during a rolling upgrade, could.
DROP FUNCTION IF EXISTS tessera_login_reserve(text, inet, integer, integer, interval, interval);
DROP FUNCTION IF EXISTS tessera_login_release(text, inet);
