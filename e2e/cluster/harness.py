"""Scale-out harness with injected faults (driven by e2e/cluster/run; see README.md beside it).

Three `tessera serve` instances behind HAProxy (round robin, health checks on /readyz) share one
throwaway PostgreSQL cluster. A mixed load runs in phases; each phase injects one kind of fault
and checks what must hold during and after it. The last phase checks the whole run: refresh
tokens, codes, revocations seen everywhere within the bound, nothing half-written, an audit row
for every grant and every successful operation, no 5xx outside the faults. Prints a table of
checks and exits non-zero when any fails.
"""

import argparse
import base64
import csv
import datetime
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from load import (Http, Load, Prober, Revocation, State, Recorder, Client, Token, client_credentials,  # noqa: E402
                  introspect, now, refresh_once, revoke, sha256)
from pg import Pg, lit  # noqa: E402

# Requests sent this soon after kill -9 may still reach the dying process (see the kill check).
KILL_SETTLE = 0.05

RESOURCE = "https://mcp.cluster.test/mcp"
REDIRECT_URI = "http://127.0.0.1/callback"   # loopback: never listened on; the browser stops there
BOUND = 1.0              # a revocation is seen by every instance within this (seconds)
REUSE_GRACE = 5          # TESSERA_REFRESH_TOKEN_REUSE_GRACE for the run (seconds), see start_instance
POOL_ACQUIRE = 5.0       # src/store/mod.rs pool_options: acquire_timeout(5 s)
FAIL_FAST = POOL_ACQUIRE + 3.0   # bound on any answer while PostgreSQL is away (5 s + scheduling noise)
PG_OUTAGE = POOL_ACQUIRE + 2.0   # default: PostgreSQL down longer than the acquire timeout, so 503s must come
SKEW = 5                 # seconds of clock skew (+ on b, - on c)
INSTANCES = ("a", "b", "c")
# What Tessera may log at ERROR while PostgreSQL is away: a 503 and its cause, the audit writer
# retrying, the session store failing to load a session, a reload that keeps the previous set.
PG_LOG_OK = ("dependency unavailable", "request failed 503", "storing audit records failed; retrying",
             "tower_sessions_core::session", "could not reload", "failed to save session", "request failed 500")
# tower-sessions (the library) answers a bare 500 when it cannot save a session at the end of a
# page request: with the database away, that is the one 500 Tessera cannot turn into a 503. The
# harness counts those apart ('http-500-session') and reports them.
PG_ERRORS = {"http-503", "http-500-session"}


def log(msg):
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pct(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


class Instance:
    def __init__(self, h, name, port, metrics_port):
        self.h, self.name, self.port, self.metrics_port = h, name, port, metrics_port
        self.proc = None
        self.incarnation = 0
        self.offset = 0        # clock skew of the running process (seconds)
        self.logs = []         # (path, offset) of every incarnation

    def start(self, faketime=None):
        h = self.h
        self.incarnation += 1
        path = os.path.join(h.work, f"tessera-{self.name}.{self.incarnation}.log")
        env = dict(os.environ)
        env.update(h.tessera_env)
        env.update({
            "DATABASE_URL": f"{h.db_url}?application_name=tessera-{self.name}",
            "TESSERA_LISTEN": f"127.0.0.1:{self.port}",
            "TESSERA_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
        })
        self.offset = 0
        if faketime:
            # libfaketime shifts the wall clock (what tokens, sessions and logs read); the monotonic
            # clock (timers, timeouts) stays real.
            env.update({"LD_PRELOAD": h.args.faketime_lib, "FAKETIME": faketime,
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
            self.offset = int(faketime.rstrip("s"))
        out = open(path, "ab")
        self.proc = subprocess.Popen([h.args.tessera, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        self.logs.append((path, self.offset))
        h.note_pid(self.proc.pid)
        if getattr(h, "st", None):
            h.st.incarnation[self.name] = self.incarnation
        return self.proc.pid

    def wait_ready(self, timeout=30.0):
        deadline = now() + timeout
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tessera {self.name} exited ({self.proc.returncode}); see {self.logs[-1][0]}")
            if self.ready():
                return now()
            time.sleep(0.1)
        raise RuntimeError(f"tessera {self.name} not ready within {timeout}s; see {self.logs[-1][0]}")

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def audit_depth(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("tessera_audit_queue_depth"):
                        return int(float(line.split()[-1]))
        except OSError:
            return None
        return None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout=20.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class HAProxy:
    def __init__(self, h, port):
        self.h, self.port = h, port
        self.sock_path = os.path.join(h.work, "haproxy.sock")
        self.cfg_path = os.path.join(h.work, "haproxy.cfg")
        self.proc = None

    def write_config(self):
        servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check" for i in self.h.instances.values())
        # Round robin; /readyz every 500 ms (250 ms while changing state), two results to change.
        # A refused connection (an instance just killed, not yet marked down) is retried on another
        # server: retry-on conn-failure + redispatch on every retry. Only connection failures are
        # retried: a request that reached an instance may have changed something (a code claimed),
        # and sending it again would be a second use. No reuse of idle server connections: a
        # request sent on a kept-alive connection to an instance that has just died fails (502,
        # SH--) and cannot safely be resent; on a new connection it is refused, then redispatched.
        cfg = f"""global
    maxconn 2000
    stats socket {self.sock_path} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
    timeout check 3s
    retries 3
    retry-on conn-failure
    option redispatch 1

frontend cluster
    bind 127.0.0.1:{self.port}
    default_backend tessera

backend tessera
    balance roundrobin
    http-reuse never
    option forwardfor
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
    http-response set-header X-Served-By %s
{servers}
"""
        with open(self.cfg_path, "w") as f:
            f.write(cfg)

    def start(self):
        self.write_config()
        check = subprocess.run([self.h.args.haproxy, "-c", "-f", self.cfg_path], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        out = open(os.path.join(self.h.work, "haproxy.log"), "ab")
        self.proc = subprocess.Popen([self.h.args.haproxy, "-db", "-f", self.cfg_path], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        self.h.note_pid(self.proc.pid)
        deadline = now() + 15
        while now() < deadline:
            if os.path.exists(self.sock_path) and all(s == "UP" for s in self.status().values()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"haproxy: servers not all UP: {self.status()}")

    def cmd(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.sock_path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
            return b"".join(chunks).decode()
        finally:
            s.close()

    def stats(self):
        try:
            text = self.cmd("show stat")
        except OSError:
            return {}
        rows = list(csv.reader(io.StringIO(text.lstrip("# "))))
        if not rows:
            return {}
        head = rows[0]
        out = {}
        for r in rows[1:]:
            if len(r) == len(head):
                d = dict(zip(head, r))
                if d["pxname"] == "tessera" and d["svname"] in INSTANCES:
                    out[d["svname"]] = d
        return out

    def status(self):
        """Server -> UP / DOWN / MAINT (transitional states folded: 'UP 1/2' is still UP)."""
        return {k: v["status"].split()[0] for k, v in self.stats().items()}

    def wait_status(self, name, want, timeout):
        deadline = now() + timeout
        while now() < deadline:
            if self.status().get(name) == want:
                return now()
            time.sleep(0.05)
        return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Harness:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.pg_log = os.path.join(os.path.dirname(args.pg_data), "server.log")
        self.duration = args.duration
        self.checks = []
        self.windows = []          # (name, t0, t1, request failures allowed, log ERROR messages allowed)
        self.kill_info = None
        self.run_id = "cl" + os.urandom(3).hex()
        self.rec = Recorder(self.run_id)
        self.started = now()
        self.figures = {}

    # --- bookkeeping ---

    def note_pid(self, pid):
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{pid}\n")

    def check(self, name, ok, figures):
        self.checks.append((name, bool(ok), figures))
        log(f"{'PASS' if ok else 'FAIL'} {name}: {figures}")

    def window(self, name, t0, t1, allowed, log_ok=()):
        self.windows.append((name, t0, t1, allowed, tuple(log_ok)))

    def pg(self, application_name="cluster-harness"):
        return Pg(self.args.pg_port, "tessera", application_name=application_name)

    def sql(self, query):
        c = self.pg()
        try:
            return c.query(query)
        finally:
            c.close()

    def pg_ctl(self, *args):
        cmd = self.args.as_pg.split() + [os.path.join(self.args.pg_bin, "pg_ctl"), "-D", self.args.pg_data,
                                         "-w", "-t", "60"] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {r.stdout}{r.stderr}")

    def tessera_cli(self, *args, stdin=None):
        env = dict(os.environ)
        env.update(self.tessera_env)
        env["DATABASE_URL"] = self.db_url
        env["TESSERA_LOG_FORMAT"] = "pretty"
        r = subprocess.run([self.args.tessera, *args], env=env, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"tessera {' '.join(args)}: {r.stdout}{r.stderr}")
        return dict(line.split(None, 1) for line in r.stdout.splitlines() if len(line.split(None, 1)) == 2)

    # --- setup ---

    def setup(self):
        admin = Pg(self.args.pg_port, "postgres")
        admin.query("CREATE DATABASE tessera")
        fsync = admin.scalar("SHOW fsync")
        version = admin.scalar("SHOW server_version")
        admin.close()
        self.db_url = f"postgres://postgres@127.0.0.1:{self.args.pg_port}/tessera"
        lb_port, pa, pb, pc, ma, mb, mc = free_ports(7)
        self.issuer = f"http://127.0.0.1:{lb_port}"
        master_key = base64.b64encode(os.urandom(32)).decode()   # per run; never stored in the repo
        many = "1000000000/1s"
        self.tessera_env = {
            "TESSERA_ISSUER": self.issuer,
            "TESSERA_MASTER_KEY": master_key,
            "TESSERA_LOG": "info",
            "TESSERA_LOG_FORMAT": "json",
            # HAProxy adds X-Forwarded-For; instances believe it from loopback only.
            "TESSERA_TRUSTED_PROXIES": "127.0.0.1/32",
            # All load comes from one address and a handful of clients: Tessera's per-address and
            # per-client limits (per instance) would answer 429 to most of it. Raised out of the
            # way; the limiters still run on every request.
            "TESSERA_RATE_LIMIT_TOKEN": many, "TESSERA_RATE_LIMIT_INTROSPECT": many,
            "TESSERA_RATE_LIMIT_REVOKE": many, "TESSERA_RATE_LIMIT_BROWSER": many,
            "TESSERA_REGISTRATION_RATE_LIMIT": many,
            # Logins in flight count against the source until they finish; an instance killed
            # mid-login leaves its reservation behind. Not what this harness tests.
            "TESSERA_LOGIN_SOURCE_MAX_FAILURES": "1000000",
            # 5 s instead of 30 s, so that the reuse check can present a rotated token past the
            # window within the run's time budget; still far longer than the load's retry of a
            # refresh whose answer was lost (< 4.5 s).
            "TESSERA_REFRESH_TOKEN_REUSE_GRACE": f"{REUSE_GRACE}s",
        }
        log(f"PostgreSQL {version} on 127.0.0.1:{self.args.pg_port} (fsync={fsync}), database tessera")
        self.tessera_cli("migrate")
        res = self.tessera_cli("resource", "add", RESOURCE, "--name", "Cluster MCP", "--scope", "tools:read=Read",
                               "--scope", "tools:write=Write", "--default-scope", "tools:read", "--token-ttl", "1h")
        users = []
        for name in ("ada", "ben", "cy", "dee"):
            pw = "cl-" + os.urandom(9).hex()
            self.tessera_cli("user", "add", name, "--password-stdin", stdin=pw + "\n")
            users.append({"name": name, "password": pw})
        app = self.tessera_cli("client", "add", "--name", "Cluster web app", "--confidential",
                               "--redirect-uri", REDIRECT_URI)
        cc = self.tessera_cli("client", "add", "--name", "Cluster machine", "--confidential", "--grant",
                              "client_credentials", "--resource", RESOURCE)
        self.cfg = {
            "issuer": self.issuer, "lb_port": lb_port, "resource": RESOURCE, "redirect_uri": REDIRECT_URI,
            "rs_id": res["introspection_client_id"].strip(), "rs_secret": res["introspection_client_secret"].strip(),
            "cc_id": cc["client_id"].strip(), "cc_secret": cc["client_secret"].strip(), "users": users,
            "bound": BOUND,
        }
        self.st = State(self.cfg, self.rec)
        self.st.clients.append(Client(app["client_id"].strip(), app["client_secret"].strip(), "admin"))
        self.instances = {n: Instance(self, n, p, m) for n, p, m in zip(INSTANCES, (pa, pb, pc), (ma, mb, mc))}
        self.ports = {n: i.port for n, i in self.instances.items()}
        for i in self.instances.values():
            i.start()
        for i in self.instances.values():
            i.wait_ready()
            self.st.up[i.name] = True
        self.lb = HAProxy(self, lb_port)
        self.lb.start()
        self.prober = Prober(self.st, self.ports)
        self.prober.start()
        hv = subprocess.run([self.args.haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        tv = subprocess.run([self.args.tessera, "--version"], capture_output=True, text=True).stdout.strip()
        log(f"{tv}: a :{pa}, b :{pb}, c :{pc}; {hv} on {self.issuer}; setup took {now() - self.started:.1f}s")
        self.figures["versions"] = f"{tv}; {hv}; PostgreSQL {version} (fsync={fsync})"

    # --- helpers for phases ---

    def phase(self, name):
        self.st.phase = name
        log(f"== phase {name}")

    def direct(self, name, timeout=8.0):
        return Http(self.rec, name, self.ports[name], timeout=timeout)

    def reqs_between(self, t0, t1, via=None):
        return [r for r in self.rec.reqs if r.t1 is not None and r.t0 < t1 and r.t1 > t0
                and (via is None or r.via == via)]

    def sleep_until(self, t):
        d = t - now()
        if d > 0:
            time.sleep(d)

    def take_chain(self, via=None):
        """A live chain reserved for a fault check (the load leaves busy chains alone)."""
        for _ in range(100):
            chain = self.st.take_chain()
            if chain:
                return chain
            time.sleep(0.1)
        raise RuntimeError("no live refresh-token chain to use")

    def revoke_and_watch(self, chain, via, watchers, label):
        """Revoke a chain's grant through `via` directly (retried until it answers 200), then
        introspect its access token at `watchers` directly until each says inactive: an 'active'
        answer to a probe sent later than the bound is recorded as late. An instance that cannot
        answer (503) is asked again, up to 30 s. The revocation, or None if never answered."""
        st = self.st
        for t in chain.tokens:
            t.revoke_sent = t.revoke_sent or now()
        with st.lock:
            chain.state, chain.reason = "revoked", "revoked_by_client"
        http = self.direct(via)
        resp = revoke(st, http, chain.client, chain.refresh, deadline_s=30, hint="refresh_token")
        http.close()
        if not resp:
            return None
        for t in chain.tokens:
            t.revoke_answered = t.revoke_answered or resp.req.t1
        r = Revocation(label, chain.access, resp.req.t1, resp.req.rid, st.phase)
        with st.lock:
            st.revocations.append(r)
        left = self.prober.probe_now(r, names=watchers, until=resp.req.t1 + BOUND * 1.5)
        if left:
            self.prober.probe_now(r, names=left, until=now() + 30)
        return r

    def warm(self, chain, names):
        """Introspect a chain's access token at each named instance: they remember its grant
        standing (what a missed notification would leave stale)."""
        for n in names:
            http = self.direct(n)
            resp = introspect(self.st, http, chain.access.jwt, kind="probe")
            http.close()
            if not (resp.ok and resp.status == 200 and resp.json().get("active")):
                return False
        return True

    def listeners(self):
        return self.sql("SELECT application_name, pid, coalesce(wait_event_type, ''), state FROM pg_stat_activity "
                        "WHERE application_name LIKE 'tessera-%' AND query LIKE 'LISTEN%'")

    def wait_listeners(self, exclude_pids=(), timeout=20.0):
        """Until each instance has a LISTEN backend not in `exclude_pids`: seconds waited, or None."""
        t0 = now()
        while now() - t0 < timeout:
            try:
                rows = self.listeners()
            except (OSError, ConnectionError, Exception):
                rows = []
            apps = {a for a, pid, _, _ in rows if int(pid) not in exclude_pids}
            if apps >= {f"tessera-{n}" for n in INSTANCES}:
                return now() - t0
            time.sleep(0.1)
        return None

    def half_written(self):
        rows = self.sql("""
            SELECT
              (SELECT count(*) FROM authorization_codes c JOIN clients cl USING (client_id)
                WHERE c.used_at IS NOT NULL AND 'refresh_token' = ANY (cl.grant_types)
                  AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = c.grant_id)),
              (SELECT count(*) FROM refresh_tokens r WHERE r.rotated_at IS NOT NULL
                  AND (r.successor_hash IS NULL
                       OR NOT EXISTS (SELECT 1 FROM refresh_tokens s WHERE s.token_hash = r.successor_hash))),
              (SELECT count(*) FROM grants g WHERE g.user_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = g.id)),
              (SELECT count(*) FROM authorization_codes WHERE used_at IS NOT NULL),
              (SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL)""")
        return tuple(int(x) for x in rows[0])

    # --- phases ---

    def phase_baseline(self):
        self.phase("baseline")
        t0 = now()
        load = Load(self.st, self.duration, races=True, ports=self.ports)
        load.start()
        self.sleep_until(t0 + self.duration)
        load.join()
        reqs = self.reqs_between(t0, now())
        failed = [r for r in reqs if r.failed]
        lat = [r.latency for r in reqs if r.via == "lb" and not r.failed]
        self.check("baseline: no failed request", not failed,
                   f"{len(reqs)} requests, {len(failed)} failed, p50 {pct(lat, 50) * 1000:.0f} ms, "
                   f"p99 {pct(lat, 99) * 1000:.0f} ms" + (f"; first: {describe(failed[0])}" if failed else ""))
        self.figures["baseline_p99"] = pct(lat, 99)

    def phase_kill(self):
        self.phase("kill -9")
        victim = self.instances["b"]
        load = Load(self.st, self.duration + 60, ports=self.ports)
        t_start = now()
        load.start()
        self.sleep_until(t_start + max(2.0, self.duration * 0.3))
        inflight = self.rec.inflight_lb
        scur = int(self.lb.stats().get("b", {}).get("scur", 0) or 0)
        t_kill = now()
        victim.kill9()
        self.st.up["b"] = False
        t_down = self.lb.wait_status("b", "DOWN", 10)
        detect = (t_down - t_kill) if t_down else None
        self.window("kill -9 of b", t_kill, (t_down or t_kill + 10) + 1.0, {"reset", "refused", "http-502", "http-503"})
        self.check("kill -9: HAProxy marks the instance down within 3 s", detect is not None and detect <= 3.0,
                   f"DOWN after {detect:.2f}s" if detect is not None else "never marked DOWN within 10 s")
        # Back in service after a while (a supervisor would restart it): it rejoins the rotation.
        self.sleep_until(t_start + max(self.duration * 0.7, (t_down or now()) - t_start + 2.0))
        victim.start()
        try:
            victim.wait_ready()
            t_up = self.lb.wait_status("b", "UP", 15)
        except RuntimeError as e:
            t_up = None
            log(str(e))
        self.st.up["b"] = t_up is not None
        self.sleep_until(t_start + max(self.duration, now() - t_start + 1.0))
        load.join()
        self.check("kill -9: the restarted instance rejoins", t_up is not None,
                   f"UP in HAProxy {t_up - t_kill:.1f}s after the kill" if t_up else "not UP within 15 s")
        # Client-visible failures: only requests in flight at the kill (started before it,
        # answered after it) may fail; nothing sent after the kill has settled may.
        # kill(2) returns before the kernel has torn down the process's sockets: a request sent
        # within KILL_SETTLE of it can still reach the dying process, so it counts as in flight.
        settle = t_kill + KILL_SETTLE
        lb = [r for r in self.rec.reqs if r.via == "lb" and r.t1 is not None and r.t1 >= t_kill]
        inflight += sum(1 for r in lb if t_kill < r.t0 <= settle)
        in_flight_failed = [r for r in lb if r.failed and r.t0 <= settle]
        later_failed = [r for r in lb if r.failed and r.t0 > settle and r.t0 < (t_down or t_kill) + 5]
        kinds = {}
        for r in in_flight_failed + later_failed:
            kinds[r.err] = kinds.get(r.err, 0) + 1
        self.check("kill -9: failures at most the requests in flight",
                   len(in_flight_failed) <= max(inflight, scur) and not later_failed,
                   f"{len(in_flight_failed)} in-flight failed (bound: {inflight} in flight at the kill, "
                   f"HAProxy scur {scur}), {len(later_failed)} sent after the kill failed; kinds {kinds}"
                   + (f"; e.g. {describe(later_failed[0])}" if later_failed else ""))
        codes, rotations, orphans, used, rotated = self.half_written()
        self.check("kill -9: nothing half-written (SQL)", codes == 0 and rotations == 0 and orphans == 0,
                   f"codes claimed without their refresh token: {codes}, rotations without successor: {rotations}, "
                   f"grants without their code: {orphans} (of {used} claimed codes, {rotated} rotations)")
        # The killed process's log: what it had queued for the audit table when it died.
        self.kill_info = (t_kill, victim.name, victim.logs[-2][0] if len(victim.logs) > 1 else None)
        self.figures["kill"] = (len(in_flight_failed), inflight)

    def phase_pg(self):
        self.phase("PostgreSQL restart")
        st = self.st
        before = list(st.revocations)
        pids = {n: i.proc.pid for n, i in self.instances.items()}
        load = Load(st, self.duration + 120, ports=self.ports)
        t_start = now()
        load.start()
        self.sleep_until(t_start + 2.0)
        # Grants that b and c remember as standing, revoked through a the moment PostgreSQL is
        # back: b and c must not answer from memory what changed while they reconnect.
        c1, c2, c3 = self.take_chain(), self.take_chain(), self.take_chain()
        warmed = self.warm(c1, ("b", "c")) and self.warm(c2, ("b", "c"))
        # 1. pg_ctl restart -m fast.
        t0 = now()
        self.pg_ctl("restart", "-m", "fast", "-l", self.pg_log, "-o", self.args.pg_opts)
        t_back = now()
        r1 = self.revoke_and_watch(c1, "a", ("b", "c"), "just after the pg restart")
        ready = self.wait_all_ready(30)
        t_ready = now()
        self.window("pg restart", t0, t_ready + 1.0, PG_ERRORS, PG_LOG_OK)
        self.check("pg restart: every instance ready again, same processes", ready is not None and
                   all(i.proc.pid == pids[n] and i.proc.poll() is None for n, i in self.instances.items()),
                   f"pg_ctl restart -m fast took {t_back - t0:.1f}s; every /readyz 200 and UP in HAProxy "
                   f"{t_ready - t_back:.1f}s later")
        self.check("pg restart: revoke via a at once, b and c never accept it after 1 s",
                   warmed and r1 is not None and not r1.late_active and len(r1.first_inactive) == 2,
                   watch_text(r1))
        # 2. PostgreSQL down longer than the pool's acquire timeout: every request answers, and
        # within the bound; those that need the database answer 503. Each instance is also called
        # directly (HAProxy answers 503 by itself once every /readyz fails).
        time.sleep(1.0)
        watch = DirectWatch(self, INSTANCES)
        watch.start()
        time.sleep(0.3)
        t1 = now()
        self.pg_ctl("stop", "-m", "fast")
        time.sleep(self.args.pg_outage)
        self.pg_ctl("start", "-l", self.pg_log, "-o", self.args.pg_opts)
        t_up = now()
        r2 = self.revoke_and_watch(c2, "a", ("b", "c"), "just after the pg outage")
        ready = self.wait_all_ready(30)
        t_ready2 = now()
        time.sleep(0.5)
        watch.stop()
        self.window("pg outage", t1, t_ready2 + 1.0, PG_ERRORS, PG_LOG_OK)
        self.figures["pg_outage"] = (t_up - t1, t_ready2 - t_up)
        listen_wait = self.wait_listeners(timeout=20)
        # 3. Notifications flow again: b and c remember a grant as standing; a revokes it.
        warmed3 = self.warm(c3, ("b", "c"))
        r3 = self.revoke_and_watch(c3, "a", ("b", "c"), "after LISTEN resumed")
        for c in (c1, c2, c3):
            st.release(c)
        self.sleep_until(t_start + max(self.duration, now() - t_start + 1.0))
        load.join()
        reqs = self.reqs_between(t0, t_ready2)
        slow = [r for r in reqs if r.latency > FAIL_FAST]
        lat_max = max((r.latency for r in reqs), default=0)
        bad = [r for r in reqs if r.failed and r.err not in PG_ERRORS | {"unexpected"}]
        s503 = sum(1 for r in reqs if r.err == "http-503")
        kinds = {}
        for r in reqs:
            if r.failed:
                kinds[r.err] = kinds.get(r.err, 0) + 1
        self.figures["pg_latency"] = lat_max
        self.check(f"pg down: every request answered within {FAIL_FAST:.0f} s (pool acquire {POOL_ACQUIRE:.0f} s)",
                   not slow, f"{len(reqs)} requests while restarting or down, max latency {lat_max:.2f}s "
                   f"({describe(max(reqs, key=lambda r: r.latency)) if reqs else '-'}), "
                   f"{len(slow)} slower" + (f"; e.g. {describe(slow[0])}" if slow else ""))
        self.check("pg down: failures are 503 only (and tower-sessions' bare 500)", not bad and s503 > 0,
                   f"{s503} answered 503, other failures {len(bad)}; kinds {kinds}"
                   + (f"; e.g. {describe(bad[0])}" if bad else ""))
        dw = watch.summary()
        self.check(f"pg down: each instance called directly answers 200 or 503 within {FAIL_FAST:.0f} s",
                   dw["ok"], dw["text"])
        self.check("pg back: every instance recovers without a restart",
                   ready is not None and all(i.proc.pid == pids[n] and i.proc.poll() is None
                                             for n, i in self.instances.items()),
                   f"PostgreSQL down {t_up - t1:.1f}s; every /readyz 200 and UP {t_ready2 - t_up:.1f}s after it "
                   f"started; same processes")
        self.check("pg back: revoke via a at once, b and c never accept it after 1 s",
                   warmed and r2 is not None and not r2.late_active and len(r2.first_inactive) == 2,
                   watch_text(r2))
        self.check("pg back: LISTEN resumes on every instance, notifications flow",
                   listen_wait is not None and warmed3 and seen_within(r3, 2),
                   (f"a LISTEN backend per instance {listen_wait:.1f}s after ready; " if listen_wait is not None else
                    "not every instance LISTENs after 20 s; ") + watch_text(r3))
        # Nothing revoked before the restart is forgotten.
        sample = random.sample(before, min(60, len(before)))
        forgotten = []
        for n in INSTANCES:
            http = self.direct(n)
            for rv in sample:
                resp = introspect(st, http, rv.token.jwt, kind="probe")
                if not (resp.ok and resp.status == 200) or resp.json().get("active"):
                    forgotten.append((n, rv.what, resp.req.status))
            http.close()
        self.check("pg back: no revocation made before the restart is forgotten", not forgotten and sample,
                   f"{len(sample)} tokens revoked earlier x 3 instances: {len(forgotten)} active or unanswered"
                   + (f": {forgotten[:3]}" if forgotten else ""))

    def wait_all_ready(self, timeout):
        deadline = now() + timeout
        while now() < deadline:
            if all(i.ready() for i in self.instances.values()) and \
                    all(s == "UP" for s in self.lb.status().values()):
                return now()
            time.sleep(0.1)
        return None

    def phase_listen(self):
        self.phase("LISTEN killed")
        st = self.st
        load = Load(st, self.duration + 60, ports=self.ports)
        t_start = now()
        load.start()
        self.sleep_until(t_start + 1.0)
        c1 = self.take_chain()
        c2 = self.take_chain()
        warmed = self.warm(c1, ("b", "c"))
        old = {int(pid) for _, pid, _, _ in self.listeners()}
        # Hold the listener's reload after reconnecting (it reads signing_keys) so the instances
        # stay "not listening" long enough to test: the fail-closed path, deterministically.
        locker = self.pg()
        locker.query("BEGIN; LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE")
        t0 = now()
        killed = self.sql("SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name LIKE 'tessera-%' AND query LIKE 'LISTEN%'")
        # Each instance reconnects and blocks in its reload: not listening.
        blocked = set()
        deadline = now() + 5
        while now() < deadline and blocked != {f"tessera-{n}" for n in INSTANCES}:
            rows = self.sql("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'tessera-%' "
                            "AND wait_event_type = 'Lock' AND query ILIKE '%signing_keys%'")
            blocked = {a for (a,) in rows}
            time.sleep(0.05)
        r1 = self.revoke_and_watch(c1, "a", ("b", "c"), "while not listening")
        time.sleep(1.0)
        locker.query("COMMIT")
        locker.close()
        t1 = now()
        found = self.wait_listeners(exclude_pids=old, timeout=10)
        resumed = None if found is None else now() - t0
        warmed2 = self.warm(c2, ("b", "c"))
        r2 = self.revoke_and_watch(c2, "a", ("b", "c"), "after resubscribing")
        # Once more, nothing held: how long until each instance LISTENs again by itself.
        c3 = self.take_chain()
        warmed3 = self.warm(c3, ("b", "c"))
        old = {int(pid) for _, pid, _, _ in self.listeners()}
        t2 = now()
        killed2 = self.sql("SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name LIKE 'tessera-%' AND query LIKE 'LISTEN%'")
        found = self.wait_listeners(exclude_pids=old, timeout=10)
        again = None if found is None else now() - t2
        r3 = self.revoke_and_watch(c3, "a", ("b", "c"), "after resubscribing by itself")
        for c in (c1, c2, c3):
            st.release(c)
        self.sleep_until(t_start + max(self.duration, now() - t_start + 1.0))
        load.join()
        reqs = self.reqs_between(t_start, now())
        failed = [r for r in reqs if r.failed]
        self.check("LISTEN killed: its backends terminated, instances not listening",
                   len(killed) == 3 and len(blocked) == 3,
                   f"terminated {sorted(a for a, _ in killed)}; reconnected and held in their reload: {sorted(blocked)}")
        self.check("LISTEN killed: fail closed (a revocation meanwhile is seen within 1 s)",
                   warmed and seen_within(r1, 2), watch_text(r1))
        self.check("LISTEN killed: resubscribes within 10 s, notifications flow",
                   resumed is not None and warmed2 and seen_within(r2, 2),
                   (f"a new LISTEN backend per instance {resumed:.1f}s after the kill (held {t1 - t0:.1f}s); " if resumed
                    is not None else "no new LISTEN backend for every instance within 10 s; ") + watch_text(r2))
        self.check("LISTEN killed (nothing held): a new LISTEN within 5 s, notifications flow",
                   len(killed2) == 3 and again is not None and again <= 5 and warmed3 and seen_within(r3, 2),
                   (f"terminated {len(killed2)}; a new LISTEN backend per instance {again:.2f}s later; "
                    if again is not None else f"terminated {len(killed2)}; no new LISTEN within 10 s; ")
                   + watch_text(r3))
        self.check("LISTEN killed: no failed request", not failed,
                   f"{len(reqs)} requests, {len(failed)} failed" + (f"; e.g. {describe(failed[0])}" if failed else ""))
        self.figures["listen"] = (t1 - t0, resumed)

    def phase_audit(self):
        self.phase("audit table unavailable")
        st = self.st
        load = Load(st, self.duration + 90, ports=self.ports)
        t_start = now()
        load.start()
        self.sleep_until(t_start + 1.0)
        depths = {n: 0 for n in INSTANCES}

        def sample(seconds):
            end = now() + seconds
            while now() < end:
                for n, i in self.instances.items():
                    d = i.audit_depth()
                    if d is not None:
                        depths[n] = max(depths[n], d)
                time.sleep(0.2)

        hold = max(3.0, self.duration * 0.4)
        # 1. Blocked: a transaction holds an exclusive lock on audit_events; the writers' INSERTs wait.
        locker = self.pg()
        locker.query("BEGIN; LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        t0 = now()
        sample(hold)
        locker.query("COMMIT")
        locker.close()
        t1 = now()
        blocked_depth = dict(depths)
        # 2. Failing: every INSERT is refused (a constraint no row meets); the writers retry their batches.
        self.sql("ALTER TABLE audit_events ADD CONSTRAINT cluster_audit_unavailable CHECK (false) NOT VALID")
        t2 = now()
        sample(hold)
        self.sql("ALTER TABLE audit_events DROP CONSTRAINT cluster_audit_unavailable")
        t3 = now()
        # Drained: the writers back off up to 5 s between attempts.
        drained = None
        deadline = now() + 20
        while now() < deadline:
            ds = [i.audit_depth() for i in self.instances.values()]
            if all(d == 0 for d in ds):
                drained = now() - t3
                break
            time.sleep(0.2)
        self.window("audit writer failing", t2, t3 + (drained or 20) + 1.0, set(),
                    ("storing audit records failed; retrying",))
        self.sleep_until(t_start + max(self.duration, now() - t_start + 1.0))
        load.join()
        reqs = self.reqs_between(t0, t3)
        failed = [r for r in reqs if r.failed]
        lat = [r.latency for r in reqs if r.via == "lb" and not r.failed]
        self.check("audit unavailable: requests keep being served", not failed and len(reqs) > 0,
                   f"{len(reqs)} requests during {t3 - t0:.1f}s ({hold:.0f}s locked, {hold:.0f}s failing), "
                   f"{len(failed)} failed, p99 {pct(lat, 99) * 1000:.0f} ms (baseline "
                   f"{self.figures.get('baseline_p99', 0) * 1000:.0f} ms)")
        self.check("audit unavailable: records queue (the fault applied), then drain",
                   max(blocked_depth.values()) > 0 and drained is not None,
                   f"max queue depth while locked {blocked_depth}, while failing "
                   f"{ {n: depths[n] for n in INSTANCES} } (limit 8192); drained "
                   + (f"{drained:.1f}s after release" if drained is not None else "NOT within 20 s"))
        # Every successful operation during the fault has its row now.
        missing = self.missing_audit(lambda r: r.t0 >= t0 - 0.5 and r.t1 <= t3 + 0.5)
        self.check("audit unavailable: no record lost once released", not missing[0],
                   f"{missing[1]} successful operations with a request id, {len(missing[0])} without their row"
                   + (f"; e.g. {missing[0][0]}" if missing[0] else ""))

    def phase_skew(self):
        self.phase("clock skew")
        st = self.st
        for name, fake in (("b", f"+{SKEW}s"), ("c", f"-{SKEW}s")):
            inst = self.instances[name]
            self.lb.cmd(f"set server tessera/{name} state maint")
            self.lb.wait_status(name, "MAINT", 5)
            deadline = now() + 10
            while now() < deadline and int(self.lb.stats().get(name, {}).get("scur", 0) or 0) > 0:
                time.sleep(0.05)
            st.up[name] = False
            inst.stop()
            inst.start(faketime=fake)
            inst.wait_ready()
            st.up[name] = True
            self.lb.cmd(f"set server tessera/{name} state ready")
            self.lb.wait_status(name, "UP", 10)
        # The skew applies: the same moment, minted at each instance directly.
        iat = {}
        for n in INSTANCES:
            http = self.direct(n)
            resp = client_credentials(st, http, kind="cc")
            http.close()
            iat[n] = Token(resp.json().get("access_token", ""), n).iat if resp.ok and resp.status == 200 else None
        ok = None not in iat.values() and abs(iat["b"] - iat["a"] - SKEW) <= 1 and abs(iat["c"] - iat["a"] + SKEW) <= 1
        self.check(f"skew: b runs {SKEW} s ahead, c {SKEW} s behind (token iat)", ok,
                   f"iat b-a {iat['b'] - iat['a']:+d}s, c-a {iat['c'] - iat['a']:+d}s" if ok or None not in iat.values()
                   else f"iat {iat}")
        load = Load(st, self.duration + 60, races=True, ports=self.ports)
        t_start = now()
        load.start()
        self.sleep_until(t_start + 1.0)
        # Tokens from every instance validate at every other.
        minted = {}
        for n in INSTANCES:
            http = self.direct(n)
            resp = client_credentials(st, http, kind="cc")
            http.close()
            if resp.ok and resp.status == 200:
                minted[n] = resp.json()["access_token"]
        with st.lock:
            by_issuer = {}
            for c in st.chains:
                if c.state == "live" and c.access.issued_by in INSTANCES and c.access.t_issued > t_start - 30:
                    by_issuer.setdefault(c.access.issued_by, c.access.jwt)
        matrix, failures = 0, []
        for origin, tokens in (("cc", minted), ("code", by_issuer)):
            for issuer, jwt in tokens.items():
                for n in INSTANCES:
                    http = self.direct(n)
                    resp = introspect(st, http, jwt, kind="probe")
                    http.close()
                    matrix += 1
                    if not (resp.ok and resp.status == 200 and resp.json().get("active")):
                        failures.append(f"{origin} token of {issuer} at {n}: {resp.req.status} {resp.text()[:60]}")
        self.check("skew: tokens issued by any instance validate at every other",
                   not failures and len(minted) == 3,
                   f"{matrix} introspections (issuer x validator, client_credentials and code-flow tokens), "
                   f"{len(failures)} inactive" + (f"; {failures[:2]}" if failures else ""))
        # Reuse detection across instances: rotate via a; the old token again via c within the
        # grace window gets the same successor; via b past the window revokes the grant.
        chain = self.take_chain()
        old = chain.refresh
        http_a, http_b, http_c = self.direct("a"), self.direct("b"), self.direct("c")
        r1 = refresh_once(st, http_a, chain, old, kind="reuse")
        detail, ok = [], False
        if r1.ok and r1.status == 200:
            new = r1.json()["refresh_token"]
            chain.rotated.append(old)
            chain.refresh = new
            chain.access = Token(r1.json()["access_token"], "a", chain)
            chain.tokens.append(chain.access)
            t_rot = r1.req.t1
            r2 = refresh_once(st, http_c, chain, old, kind="reuse")
            same = r2.ok and r2.status == 200 and r2.json().get("refresh_token") == new
            detail.append(f"replay via c within {REUSE_GRACE}s: {'same successor' if same else r2.req.status}")
            if same:
                chain.tokens.append(Token(r2.json()["access_token"], "c", chain))
            self.sleep_until(t_rot + REUSE_GRACE + 1.0)
            for t in chain.tokens:
                t.revoke_sent = t.revoke_sent or now()
            with st.lock:
                chain.state, chain.reason = "revoked", "refresh_reuse"
            r3 = refresh_once(st, http_b, chain, old, kind="reuse")
            r3.req.event = None   # a refused refresh leaves refresh.reuse_detected, not token.issued
            reused = r3.ok and r3.status == 400 and r3.json().get("error") == "invalid_grant"
            detail.append(f"old token via b {now() - t_rot:.1f}s after rotation: "
                          f"{r3.req.status} {r3.json().get('error') if r3.ok else r3.req.err}")
            if reused:
                for t in chain.tokens:
                    t.revoke_answered = t.revoke_answered or r3.req.t1
                rv = Revocation("refresh reuse", chain.access, r3.req.t1, r3.req.rid, st.phase)
                with st.lock:
                    st.revocations.append(rv)
                left = self.prober.probe_now(rv, names=INSTANCES, until=r3.req.t1 + BOUND * 1.5)
                r4 = refresh_once(st, http_a, chain, new, kind="reuse")
                r4.req.event = None
                dead = r4.ok and r4.status == 400
                detail.append(f"grant revoked: successor refused via a ({r4.req.status}), access token inactive "
                              f"after {fmt_inactive(rv)}")
                ok = same and dead and not left and not rv.late_active
        else:
            detail.append(f"rotation via a answered {r1.req.status}")
        for h in (http_a, http_b, http_c):
            h.close()
        st.release(chain)
        self.check("skew: refresh-token reuse detected across instances", ok, "; ".join(detail))
        self.sleep_until(t_start + max(self.duration, now() - t_start + 1.0))
        load.join()
        reqs = self.reqs_between(t_start, now())
        failed = [r for r in reqs if r.failed]
        self.check("skew: no failed request under skew", not failed,
                   f"{len(reqs)} requests, {len(failed)} failed" + (f"; e.g. {describe(failed[0])}" if failed else ""))

    # --- the whole run ---

    def final(self):
        self.phase("final checks")
        st = self.st
        self.prober.close()
        # 1. Refresh tokens: every chain's current token works, unless its grant was revoked.
        http = Http(self.rec, "lb", self.cfg["lb_port"])
        works, refused, wrong = 0, 0, []
        for chain in list(st.chains):
            if chain.state == "uncertain":
                continue
            resp = refresh_once(st, http, chain, chain.refresh, kind="final")
            if chain.state == "live":
                if resp.ok and resp.status == 200:
                    works += 1
                    chain.rotated.append(chain.refresh)
                    chain.refresh = resp.json().get("refresh_token")
                else:
                    wrong.append(f"live chain {chain.id}: {resp.req.status} {resp.text()[:80]}")
            else:
                resp.req.event = None
                if resp.ok and resp.status == 400 and resp.json().get("error") == "invalid_grant":
                    refused += 1
                else:
                    wrong.append(f"revoked chain {chain.id} ({chain.reason}): {resp.req.status}")
        http.close()
        # ... and the database agrees with every refresh token the load ever held.
        held = {}
        for chain in st.chains:
            for t in chain.rotated:
                held[sha256(t).hex()] = ("rotated", chain)
            for t in chain.lost:
                held[sha256(t).hex()] = ("lost", chain)
            if chain.refresh and chain.state in ("live", "revoked"):
                held.setdefault(sha256(chain.refresh).hex(), ("current", chain))
        rows = self.sql("SELECT encode(r.token_hash, 'hex'), r.rotated_at IS NOT NULL, g.revoked_at IS NOT NULL, "
                        "coalesce(g.revoked_reason, '') FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id")
        db = {h: (rot == "t", rev == "t", reason) for h, rot, rev, reason in rows}
        unknown = [h for h in held if h not in db]
        mismatch = []
        for h, (what, chain) in held.items():
            if h not in db:
                continue
            rot, rev, reason = db[h]
            if what == "rotated" and not rot:
                mismatch.append(f"chain {chain.id}: a token the load rotated is not rotated")
            if what == "current" and chain.state == "live" and (rot or rev):
                mismatch.append(f"chain {chain.id}: current token rotated={rot} revoked={rev} ({reason})")
        uncertain = sum(1 for c in st.chains if c.state == "uncertain")
        self.check("refresh tokens: each works or was legitimately rotated/revoked",
                   not wrong and not unknown and not mismatch,
                   f"{len(st.chains)} chains: {works} refreshed now, {refused} refused as revoked, {uncertain} left "
                   f"after a lost answer; {len(held)} tokens held, {len(unknown)} unknown to the database, "
                   f"{len(mismatch)} disagreeing" + (f"; {(wrong + mismatch)[:2]}" if wrong or mismatch else ""))
        # Grants revoked: only those the load (or a check) revoked, for the reasons it expects.
        revoked = self.sql("SELECT id::text, revoked_reason FROM grants WHERE revoked_at IS NOT NULL")
        expected = {c.gid: c.reason for c in st.chains if c.state in ("revoked", "uncertain")}
        surprising = [(gid, reason) for gid, reason in revoked if gid not in expected]
        reasons = {}
        for _, reason in revoked:
            reasons[reason] = reasons.get(reason, 0) + 1
        self.check("grants: revoked only by revocation, replay or reuse the load made", not surprising,
                   f"{len(revoked)} revoked {reasons}" + (f"; unexpected: {surprising[:3]}" if surprising else ""))
        # 2. Codes.
        dup = {c: n for c, n in st.codes.items() if n > 1}
        races = st.races
        race_ok = all(w == 1 and l == 1 for w, l, _ in races)
        self.check("codes: no duplicate successful exchange", not dup and race_ok and races,
                   f"{len(st.codes)} codes exchanged, {len(dup)} more than once; {len(races)} races of one code "
                   f"at two instances: {sum(1 for w, l, _ in races if w == 1 and l == 1)} with one winner"
                   + (f"; bad: {[r for r in races if r[:2] != (1, 1)][:3]}" if not race_ok else ""))
        codes, rotations, orphans, used, rotated = self.half_written()
        self.check("nothing half-written at the end (SQL)", codes == 0 and rotations == 0 and orphans == 0,
                   f"codes claimed without refresh token {codes}, rotations without successor {rotations}, grants "
                   f"without code {orphans} (of {used} claimed codes, {rotated} rotations)")
        # 3. Revocations seen everywhere within the bound.
        revs = st.revocations
        late = [r for r in revs if r.late_active]
        lat = [v for r in revs for v in r.first_inactive.values()]
        self.check(f"revocations: no instance accepts a revoked token later than {BOUND:.0f} s", not late and revs,
                   f"{len(revs)} revocations probed at each instance directly; time to inactive p50 "
                   f"{pct(lat, 50) * 1000:.0f} ms, max {max(lat, default=0) * 1000:.0f} ms; {len(late)} late"
                   + (f"; e.g. {late[0].what} {late[0].late_active[:3]} ({late[0].phase})" if late else ""))
        # 4. Audit: a row for every grant, and for every successful operation by its request id.
        grants = [g for (g,) in self.sql(
            "SELECT g.id::text FROM grants g WHERE g.user_id IS NOT NULL AND NOT EXISTS ("
            "SELECT 1 FROM audit_events a WHERE a.event = 'authorization.approved' "
            "AND a.detail = 'grant ' || g.id::text)")]
        total_grants = int(self.sql("SELECT count(*) FROM grants WHERE user_id IS NOT NULL")[0][0])
        grants_lost, grants = self.split_kill_grants(grants)
        missing, considered = self.missing_audit(lambda r: True)
        lost_by_kill, other = self.split_kill_losses(missing)
        lost = len(grants_lost) + len(lost_by_kill)
        self.check("audit: a row for every grant and every successful operation", not grants and not other,
                   f"{total_grants} grants, {len(grants)} without authorization.approved; {considered} successful "
                   f"operations, {len(other)} without their row"
                   + (f"; not counted: {len(grants_lost)} grant(s) and {len(lost_by_kill)} operation(s) whose "
                      f"records b had queued in the second before kill -9 (logged, lost with the process: the "
                      f"audit writer is asynchronous)" if lost else "")
                   + (f"; e.g. {(grants + other)[0]}" if grants or other else ""))
        self.figures["audit_lost_by_kill"] = lost
        # 5. No 5xx (nor any failure) outside the injected faults.
        outside, inside = [], {}
        for r in self.rec.reqs:
            if not r.failed or r.err == "unexpected":
                continue
            win = self.in_window(r)
            if win is None:
                outside.append(r)
            else:
                inside.setdefault(win, {}).setdefault(r.err, 0)
                inside[win][r.err] += 1
        self.check("zero 5xx or failed requests outside injected faults", not outside,
                   f"{len(outside)} outside; inside: {inside}" + (f"; e.g. {describe(outside[0])}" if outside else ""))
        # A request the killed instance had already carried out (a sign-in, which cycles the
        # session) but not answered is sent again by the client (see Http.call); the second
        # answer may refuse it (the form's session is gone). That is one of the requests in
        # flight at the kill failing, which the kill phase bounds and counts, not a wrong answer.
        resent_at_kill = set()
        if self.kill_info:
            t_kill = self.kill_info[0]
            resent_at_kill = {i for i, r in enumerate(st.unexpected_reqs)
                              if r.resent and r.t0 <= t_kill + KILL_SETTLE and (r.t1 or 0) >= t_kill}
        unexpected = [u for i, u in enumerate(st.unexpected) if i not in resent_at_kill]
        self.check("no semantically wrong answer", not unexpected,
                   f"{len(unexpected)}" + (f": {unexpected[:3]}" if unexpected else "")
                   + (f"; not counted: {len(resent_at_kill)} answer(s) to requests in flight at the kill and sent again"
                      if resent_at_kill else ""))
        # 6. Tessera logged no error outside the faults.
        errors, allowed = self.scan_logs()
        self.check("tessera logs: no ERROR outside injected faults", not errors,
                   f"{allowed} ERROR lines inside fault windows, {len(errors)} outside"
                   + (f"; e.g. {errors[0][:300]}" if errors else ""))

    def missing_audit(self, pick):
        """(request ids of successful operations without their audit row, how many considered)."""
        want = [r for r in self.rec.reqs if r.event and not r.failed and r.status in (200, 201, 302, 303)
                and pick(r)]
        rows = self.sql(f"SELECT request_id, event FROM audit_events WHERE request_id LIKE {lit(self.run_id + '-%')}")
        have = set(rows)
        return [f"{r.kind} {r.rid} ({r.event}, served by {r.served})" for r in want
                if (r.rid, r.event) not in have], len(want)

    def split_kill_grants(self, grants):
        """Grants without their audit row that the killed process approved in its last second (by
        the request whose answer carried the grant's code, or by the approval it logged, which a
        kill may also lose): (lost with the process, the others)."""
        if not self.kill_info or not grants:
            return [], grants
        t_kill, victim, path = self.kill_info
        logged = {}
        codes = dict(self.sql("SELECT grant_id::text, encode(code_hash, 'hex') FROM authorization_codes"))
        for g in grants:
            req = self.st.approvals.get(codes.get(g))
            if req is not None and req.served == victim and req.t1 is not None:
                logged[g] = req.t1
        for line in (open(path, errors="replace").read().splitlines() if path else []):
            if '"authorization.approved"' in line:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                detail = d.get("detail", "")
                if detail.startswith("grant "):
                    logged[detail[6:]] = self.line_time(d, 0)
        lost = [g for g in grants if logged.get(g) is not None and t_kill - 1.0 <= logged[g] <= t_kill + 0.1]
        # A consent in flight at the kill may have committed its grant and lost both its answer (a
        # 502) and its queued audit record: its code never reached the load. At most one such
        # grant per page request that failed in flight.
        in_flight = sum(1 for r in self.rec.reqs if r.kind == "page" and r.failed and r.t0 <= t_kill
                        and (r.t1 is None or r.t1 >= t_kill - 0.1))
        undelivered = [g for g in grants if g not in lost and codes.get(g) not in self.st.approvals]
        lost += undelivered[:in_flight]
        return lost, [g for g in grants if g not in lost]

    def split_kill_losses(self, missing):
        if not self.kill_info:
            return [], missing
        t_kill, victim, _ = self.kill_info
        by_rid = {r.rid: r for r in self.rec.reqs}
        lost, other = [], []
        for m in missing:
            r = by_rid.get(m.split()[1])
            if r and r.served == victim and t_kill - 1.0 <= r.t1 <= t_kill + 0.1:
                lost.append(m)
            else:
                other.append(m)
        return lost, other

    def in_window(self, r):
        for name, t0, t1, allowed, _ in self.windows:
            if r.t0 <= t1 and r.t1 >= t0 and r.err in allowed:
                return name
        return None

    def scan_logs(self):
        """ERROR lines of every instance: (those outside the faults or not what a fault explains,
        how many a fault explains)."""
        errors, allowed = [], 0
        for inst in self.instances.values():
            for path, offset in inst.logs:
                try:
                    lines = open(path, errors="replace").read().splitlines()
                except OSError:
                    continue
                for line in lines:
                    if '"level":"ERROR"' not in line:
                        continue
                    try:
                        d = json.loads(line)
                    except ValueError:
                        errors.append(f"{os.path.basename(path)}: {line}")
                        continue
                    what = f"{d.get('message', '')} {d.get('status', '')}".strip()
                    target = d.get("target", "")
                    t = self.line_time(d, offset)
                    if t is not None and any(t0 - 2 <= t <= t1 + 2 and any(ok in (what, target) or
                                                                         what.startswith(ok) for ok in log_ok)
                                             for _, t0, t1, _, log_ok in self.windows):
                        allowed += 1
                    else:
                        errors.append(f"{os.path.basename(path)}: {line}")
        return errors, allowed

    def line_time(self, d, offset):
        """The monotonic instant of a JSON log line (its timestamp, less the instance's skew)."""
        try:
            ts = d.get("timestamp", "")
            head, _, frac = ts.rstrip("Z").partition(".")
            wall = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc).timestamp()
            wall += float("0." + (frac or "0"))
        except (ValueError, AttributeError):
            return None
        return self.rec.t_start + (wall - offset - self.rec.wall_start)

    # --- report ---

    def report(self):
        reqs = self.rec.reqs
        by_kind = {}
        for r in reqs:
            k = by_kind.setdefault(r.kind, {"n": 0, "failed": {}, "lat": []})
            k["n"] += 1
            if r.failed:
                k["failed"][r.err] = k["failed"].get(r.err, 0) + 1
            elif r.t1:
                k["lat"].append(r.latency)
        print()
        print("== requests (through HAProxy unless 'direct'), by kind")
        print(f"  {'kind':<11} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  failures by kind")
        for kind in sorted(by_kind):
            k = by_kind[kind]
            print(f"  {kind:<11} {k['n']:>7} {pct(k['lat'], 50) * 1000:>8.0f} {pct(k['lat'], 99) * 1000:>8.0f} "
                  f"{max(k['lat'], default=0) * 1000:>8.0f}  {k['failed'] or '-'}")
        st = self.st
        print(f"  authorization flows: {st.flows['ok']} completed, {st.flows['failed']} failed, "
              f"{st.flows['logins']} password sign-ins; {len(st.chains)} refresh-token chains, "
              f"{len(st.revocations)} revocations, {len(st.clients) - 1} registered clients used")
        if "pg_outage" in self.figures:
            down, back = self.figures["pg_outage"]
            print(f"  PostgreSQL outage: down {down:.1f}s, instances ready {back:.1f}s after it started; max latency "
                  f"of any request while restarting or down {self.figures.get('pg_latency', 0):.2f}s")
        print()
        print("== checks")
        width = max(len(n) for n, _, _ in self.checks)
        for name, ok, figures in self.checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name:<{width}}  {figures}")
        failed = sum(1 for _, ok, _ in self.checks if not ok)
        print()
        print(f"cluster: {len(self.checks) - failed} passed, {failed} failed; {len(reqs)} requests; "
              f"harness time {now() - self.started:.0f}s ({self.figures.get('versions', '')})")
        return failed == 0

    def shutdown(self):
        try:
            self.prober.close()
        except Exception:
            pass
        if getattr(self, "lb", None):
            self.lb.stop()
        for i in getattr(self, "instances", {}).values():
            i.stop(timeout=10)


class DirectWatch:
    """While PostgreSQL is away: each instance called directly, a token request and an
    introspection every 0.3 s, to see that it answers (200 from what it holds, or 503) and fast."""

    def __init__(self, h, names):
        self.h, self.names = h, names
        self.stop_ev = threading.Event()
        self.threads = []
        self.results = {n: [] for n in names}

    def start(self):
        for n in self.names:
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, name):
        st = self.h.st
        http = self.h.direct(name, timeout=30.0)
        deadline = now() + 60
        while not self.stop_ev.is_set() and now() < deadline:
            resp = client_credentials(st, http, kind="direct")
            self.results[name].append(resp.req)
            with st.lock:
                tok = next((c.access for c in reversed(st.chains) if c.state == "live"), None)
            if tok:
                resp = introspect(st, http, tok.jwt, kind="direct")
                self.results[name].append(resp.req)
            time.sleep(0.3)
        http.close()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=40)

    def summary(self):
        parts, ok, any503 = [], True, False
        for n, reqs in self.results.items():
            codes = {}
            for r in reqs:
                key = r.status if r.status else r.err
                codes[key] = codes.get(key, 0) + 1
            lat = max((r.latency for r in reqs), default=0)
            if any(r.status not in (200, 503) for r in reqs) or lat > FAIL_FAST:
                ok = False
            any503 = any503 or 503 in codes
            parts.append(f"{n}: {codes} max {lat:.2f}s")
        if not any503:
            ok = False
            parts.append("no 503 at all: the outage did not reach them")
        return {"ok": ok, "text": "; ".join(parts)}


def describe(r):
    note = f" {r.note[:80]}" if r.note else ""
    return f"{r.kind} {r.rid} via {r.via} -> {r.status or r.err}{note} (served by {r.served}, {r.latency:.2f}s)"


def seen_within(r, n):
    """Every one of `n` instances said inactive within the bound, and none said active after it."""
    return r is not None and not r.late_active and len(r.first_inactive) == n and \
        all(v <= BOUND for v in r.first_inactive.values())


def watch_text(r):
    if r is None:
        return "the revocation was never answered"
    text = f"revoked via a; inactive at {fmt_inactive(r)} after its answer"
    if r.inconclusive:
        text += f"; unanswered probes {r.inconclusive}"
    if r.late_active:
        text += f"; ACTIVE after the bound: {r.late_active[:4]}"
    return text


def fmt_inactive(r):
    if r is None:
        return "-"
    return ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in sorted(r.first_inactive.items())) or "never"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--tessera", required=True)
    p.add_argument("--haproxy", required=True)
    p.add_argument("--faketime-lib", required=True)
    p.add_argument("--pg-bin", required=True)
    p.add_argument("--pg-data", required=True)
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--pg-opts", required=True)
    p.add_argument("--as-pg", default="")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--phases", default="baseline,kill,pg,listen,audit,skew")
    p.add_argument("--pg-outage", type=float, default=PG_OUTAGE)
    args = p.parse_args()
    h = Harness(args)
    ok = False
    try:
        h.setup()
        phases = args.phases.split(",")
        for name in phases:
            getattr(h, f"phase_{name}")()
        h.final()
    except Exception as e:
        import traceback
        traceback.print_exc()
        h.check("harness ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        try:
            ok = h.report()
        finally:
            h.shutdown()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
