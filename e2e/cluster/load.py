"""The mixed load: HTTP with a record of every request, the OAuth flows (registration, the
authorization code through the login and consent pages, refresh, client_credentials,
introspection, revocation), and the state the final checks read (every refresh-token chain,
every code, every revocation and when it was answered).

Standard library only. Every loop is bounded in count and in time; every address is 127.0.0.1.
"""

import base64
import hashlib
import html.parser
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.parse

REQUEST_TIMEOUT = 15.0  # a request that takes longer counts as hung ('timeout')


def now():
    return time.monotonic()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def random_token():
    return b64url(os.urandom(32))


def sha256(text):
    return hashlib.sha256(text.encode()).digest()


def jwt_claims(token):
    """The payload of a JWT, unverified (the harness only reads its own tokens' ids and times)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


# --- the record of every request ----------------------------------------------------------------

class Req:
    """One HTTP request: what, through where, when, and how it ended."""
    __slots__ = ("kind", "via", "t0", "t1", "status", "err", "served", "rid", "event", "note", "resent")

    def __init__(self, kind, via, t0, rid):
        self.kind, self.via, self.t0, self.rid = kind, via, t0, rid
        self.t1 = None
        self.status = None
        self.err = None      # None, or why it failed: refused, reset, timeout, http-5xx, unexpected ...
        self.served = None   # the instance that answered (HAProxy's X-Served-By, or the port called)
        self.event = None    # the audit event a success must have left (None: no check)
        self.note = ""
        self.resent = False  # sent again after the balancer closed the connection without an answer

    @property
    def latency(self):
        return (self.t1 or self.t0) - self.t0

    @property
    def failed(self):
        return self.err is not None


class Recorder:
    def __init__(self, run_id):
        self.run_id = run_id
        self.reqs = []
        self.lock = threading.Lock()
        self.counter = 0
        self.inflight_lb = 0
        self.t_start = now()
        self.wall_start = time.time()

    def next_rid(self):
        with self.lock:
            self.counter += 1
            return f"{self.run_id}-{self.counter}"

    def add(self, req):
        with self.lock:
            self.reqs.append(req)

    def enter(self, via):
        if via == "lb":
            with self.lock:
                self.inflight_lb += 1

    def leave(self, via):
        if via == "lb":
            with self.lock:
                self.inflight_lb -= 1

    def wall(self, t):
        """Wall-clock time of a monotonic instant."""
        return self.wall_start + (t - self.t_start)


class Resp:
    def __init__(self, req, status=None, headers=None, body=b"", cookies=()):
        self.req = req
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.cookies = list(cookies)

    @property
    def ok(self):
        return self.req.err is None

    def json(self):
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return {}

    def text(self):
        return self.body.decode(errors="replace")


class Http:
    """One keep-alive connection to one address, for one thread; every request recorded.

    A failure is classified, never retried here, except one case: a request on a reused
    connection that the load balancer had closed while idle (nothing was sent upstream).
    """

    def __init__(self, rec, name, port, timeout=REQUEST_TIMEOUT):
        self.rec, self.name, self.port, self.timeout = rec, name, port, timeout
        self.conn = None
        self.used = False

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def call(self, kind, method, path, body=None, headers=None, form=None, json_body=None, event=None):
        hdrs = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        rid = self.rec.next_rid()
        hdrs["X-Request-Id"] = rid
        req = Req(kind, self.name, now(), rid)
        req.event = event
        self.rec.enter(self.name)
        try:
            for attempt in (1, 2):
                reused = self.conn is not None and self.used
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                    self.used = False
                try:
                    self.conn.request(method, path, body=body, headers=hdrs)
                    self.used = True
                    res = self.conn.getresponse()
                    data = res.read()
                    req.t1 = now()
                    req.status = res.status
                    lowered = {k.lower(): v for k, v in res.getheaders()}
                    cookies = [v for k, v in res.getheaders() if k.lower() == "set-cookie"]
                    req.served = lowered.get("x-served-by", self.name if self.name != "lb" else None)
                    if res.status >= 500:
                        req.err = f"http-{res.status}"
                        if res.status == 500 and not data and kind == "page":
                            # tower-sessions answers a bare 500 when it cannot save the session
                            req.err = "http-500-session"
                    if lowered.get("connection", "").lower() == "close" or res.will_close:
                        self.close()
                    return Resp(req, res.status, lowered, data, cookies)
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                    self.close()
                    if reused and attempt == 1 and self.name == "lb" and isinstance(e, http.client.RemoteDisconnected):
                        # The balancer closed the connection without an answer: it had closed it
                        # as idle (the request never left it), or the instance died holding the
                        # request. A browser sends it again on a new connection; so does this.
                        req.resent = True
                        continue
                    req.t1 = now()
                    req.err = "reset"
                    req.note = type(e).__name__
                    return Resp(req)
                except ConnectionRefusedError:
                    self.close()
                    req.t1 = now()
                    req.err = "refused"
                    return Resp(req)
                except (socket.timeout, TimeoutError):
                    self.close()
                    req.t1 = now()
                    req.err = "timeout"
                    return Resp(req)
                except (OSError, http.client.HTTPException) as e:
                    self.close()
                    req.t1 = now()
                    req.err = "io"
                    req.note = f"{type(e).__name__}: {e}"
                    return Resp(req)
        finally:
            self.rec.leave(self.name)
            self.rec.add(req)


def basic(client_id, secret):
    raw = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


# --- HTML forms ---------------------------------------------------------------------------------

class Forms(html.parser.HTMLParser):
    """Every form of a page: its action and what a browser would post (hidden inputs, checked
    enabled checkboxes), and the names of its other fields."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": [], "names": set()})
        elif self.forms and tag in ("input", "button"):
            form = self.forms[-1]
            name = a.get("name")
            if not name:
                return
            form["names"].add(name)
            kind = (a.get("type") or "").lower()
            if tag == "input" and kind == "hidden":
                form["fields"].append((name, a.get("value", "")))
            elif tag == "input" and kind == "checkbox" and "checked" in a and "disabled" not in a:
                form["fields"].append((name, a.get("value", "on")))


def parse_forms(text):
    p = Forms()
    p.feed(text)
    return p.forms


# --- shared state -------------------------------------------------------------------------------

class Token:
    """An access token the load holds."""
    __slots__ = ("jwt", "jti", "gid", "iat", "exp", "client_id", "t_issued", "issued_by", "revoke_sent",
                 "revoke_answered", "chain")

    def __init__(self, jwt, issued_by, chain=None):
        c = jwt_claims(jwt)
        self.jwt, self.jti, self.gid = jwt, c.get("jti"), c.get("gid")
        self.iat, self.exp, self.client_id = c.get("iat", 0), c.get("exp", 0), c.get("client_id")
        self.t_issued = now()
        self.issued_by = issued_by
        self.revoke_sent = None      # when a revocation that covers it was sent (its own or its grant's)
        self.revoke_answered = None  # ... and answered 200
        self.chain = chain


class Chain:
    """One grant's refresh-token chain, as the load sees it."""

    def __init__(self, cid, client, refresh, access, code_rid):
        self.id = cid
        self.client = client
        self.gid = access.gid
        self.refresh = refresh          # the current refresh token
        self.access = access
        self.state = "live"             # live | revoked | uncertain
        self.reason = None              # why revoked: revoked_by_client, code_replay, refresh_reuse
        self.busy = False
        self.rotated = []               # refresh tokens this chain rotated away (answered)
        self.lost = []                  # refresh tokens presented whose answer was lost
        self.tokens = [access]
        self.code_rid = code_rid


class Client:
    def __init__(self, client_id, secret, origin):
        self.id, self.secret, self.origin = client_id, secret, origin

    def auth(self, form):
        """Client authentication for a token-endpoint request: Basic for confidential clients,
        client_id in the body for public ones."""
        if self.secret:
            return basic(self.id, self.secret)
        form["client_id"] = self.id
        return {}


class Revocation:
    """A revocation answered 200, and what it must make inactive everywhere within the bound."""

    def __init__(self, what, token, t_answer, rid, phase):
        self.what, self.token, self.t_answer, self.rid, self.phase = what, token, t_answer, rid, phase
        self.first_inactive = {}   # instance -> seconds after t_answer of its first inactive answer
        self.late_active = []      # (instance, seconds after t_answer) of active answers past the bound
        self.inconclusive = {}     # instance -> count of failed probes


class State:
    def __init__(self, cfg, rec):
        self.cfg = cfg
        self.rec = rec
        self.lock = threading.Lock()
        self.clients = []
        self.chains = []
        self.cc_tokens = []
        self.revocations = []
        self.codes = {}             # code -> successful exchanges
        self.code_losts = []        # codes whose exchange answer was lost (never presented again)
        self.races = []             # (winners, losers, detail) of concurrent exchanges of one code
        self.approvals = {}         # hex SHA-256 of a code -> the request whose answer carried it
        self.flows = {"ok": 0, "failed": 0, "logins": 0}
        self.unexpected = []        # (kind, phase, detail) of semantically wrong answers
        self.unexpected_reqs = []   # their requests, in the same order
        self.phase = "setup"
        self.up = {}                # instance -> whether it is up (probes skip the others)
        self.incarnation = {}       # instance -> how many times it was started (connections to an
                                    # earlier process are dropped)
        self.probe_queue = []
        self.probe_cv = threading.Condition(self.lock)

    def note_unexpected(self, req, detail):
        req.err = "unexpected"
        req.note = detail
        with self.lock:
            self.unexpected.append((req.kind, self.phase, detail))
            self.unexpected_reqs.append(req)

    def live_chains(self):
        return [c for c in self.chains if c.state == "live" and not c.busy]

    def take_chain(self):
        with self.lock:
            choices = [c for c in self.chains if c.state == "live" and not c.busy]
            if not choices:
                return None
            chain = random.choice(choices)
            chain.busy = True
            return chain

    def release(self, chain):
        with self.lock:
            chain.busy = False

    def add_revocation(self, r):
        with self.probe_cv:
            self.revocations.append(r)
            self.probe_queue.append(r)
            self.probe_cv.notify()


# --- flows --------------------------------------------------------------------------------------

class Browser:
    """A browser: a cookie jar, redirects followed by hand, forms posted as a browser would."""

    def __init__(self, st, http):
        self.st, self.http = st, http
        self.jar = {}
        self.user = random.choice(st.cfg["users"])

    def _cookie_header(self):
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())} if self.jar else {}

    def _store(self, resp):
        for raw in resp.cookies:
            first, *attrs = raw.split(";")
            name, _, value = first.strip().partition("=")
            expired = any(a.strip().lower().startswith("max-age=0") for a in attrs) or not value
            if expired:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def code(self, client):
        """authorize -> (login) -> (consent: allow) -> the redirect to the client: (code, verifier),
        or None when a step failed (recorded)."""
        cfg = self.st.cfg
        verifier = random_token()
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        state = random_token()
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": client.id, "redirect_uri": cfg["redirect_uri"],
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "resource": cfg["resource"], "scope": "tools:read",
        })
        resp = self.http.call("page", "GET", "/authorize?" + query, headers=self._cookie_header())
        for _ in range(8):
            self._store(resp)
            if not resp.ok:
                return None
            if resp.status in (302, 303):
                location = resp.headers.get("location", "")
                if location.startswith(cfg["redirect_uri"]):
                    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
                    if q.get("state") != state or "code" not in q:
                        self.st.note_unexpected(resp.req, f"bad redirect to the client: {location[:120]}")
                        return None
                    if q.get("iss") != cfg["issuer"]:
                        self.st.note_unexpected(resp.req, f"iss {q.get('iss')} in the redirect")
                        return None
                    with self.st.lock:
                        self.st.approvals[hashlib.sha256(q["code"].encode()).hexdigest()] = resp.req
                    return q["code"], verifier
                target = urllib.parse.urlsplit(urllib.parse.urljoin(cfg["issuer"] + "/", location))
                if target.hostname != "127.0.0.1":
                    self.st.note_unexpected(resp.req, f"redirect off loopback: {location[:120]}")
                    return None
                path = target.path + ("?" + target.query if target.query else "")
                resp = self.http.call("page", "GET", path, headers=self._cookie_header())
                continue
            if resp.status != 200:
                self.st.note_unexpected(resp.req, f"page answered {resp.status}: {resp.text()[:160]!r}")
                return None
            forms = parse_forms(resp.text())
            login = next((f for f in forms if "password" in f["names"]), None)
            consent = next((f for f in forms if "decision" in f["names"]), None)
            if login:
                form, fields = login, login["fields"] + [("username", self.user["name"]),
                                                         ("password", self.user["password"])]
                event = "login.success"
                with self.st.lock:
                    self.st.flows["logins"] += 1
            elif consent:
                form, fields = consent, consent["fields"] + [("decision", "allow")]
                event = None  # authorization.approved is checked by its grant id
            else:
                self.st.note_unexpected(resp.req, f"unexpected page: {resp.text()[:160]!r}")
                return None
            action = urllib.parse.urlsplit(urllib.parse.urljoin(cfg["issuer"] + "/", form["action"]))
            headers = {"Origin": cfg["issuer"], "Sec-Fetch-Site": "same-origin", **self._cookie_header()}
            resp = self.http.call("page", "POST", action.path, form=fields, headers=headers, event=None)
            if resp.ok and resp.status in (302, 303) and event:
                resp.req.event = event
        self.st.note_unexpected(resp.req, "the authorization flow took too many steps")
        return None


def exchange_code(st, http, client, code, verifier, kind="code"):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": st.cfg["redirect_uri"],
            "code_verifier": verifier}
    headers = client.auth(form)
    return http.call(kind, "POST", "/token", form=form, headers=headers, event="token.issued")


def new_chain(st, client, resp):
    body = resp.json()
    access = Token(body.get("access_token", ""), resp.req.served)
    with st.lock:
        chain = Chain(len(st.chains), client, body.get("refresh_token"), access, resp.req.rid)
        access.chain = chain
        st.chains.append(chain)
    return chain


def refresh_once(st, http, chain, token, kind="refresh"):
    form = {"grant_type": "refresh_token", "refresh_token": token}
    headers = chain.client.auth(form)
    return http.call(kind, "POST", "/token", form=form, headers=headers, event="token.issued")


def refresh_chain(st, http, chain, deadline_s=4.0):
    """Rotate the chain's refresh token. An answer lost (connection failure, 5xx) is retried with
    the same token within the reuse grace window, which answers a retry with the same successor;
    past that the chain is left alone ('uncertain') rather than presenting the token again."""
    token = chain.refresh
    t_first = now()
    while True:
        resp = refresh_once(st, http, chain, token)
        if resp.ok and resp.status == 200:
            body = resp.json()
            access = Token(body.get("access_token", ""), resp.req.served, chain)
            with st.lock:
                if token in chain.lost:
                    chain.lost.remove(token)
                chain.rotated.append(token)
                chain.refresh = body.get("refresh_token")
                chain.access = access
                chain.tokens.append(access)
            return True
        if resp.ok:  # a definitive 4xx
            err = resp.json().get("error")
            st.note_unexpected(resp.req, f"refresh of a live chain answered {resp.status} {err}")
            with st.lock:
                chain.state = "revoked"
                chain.reason = f"unexpected {err}"
            return False
        with st.lock:
            if token not in chain.lost:
                chain.lost.append(token)
        if now() - t_first > deadline_s:
            with st.lock:
                chain.state = "uncertain"
            return False
        time.sleep(0.3)


def revoke(st, http, client, token, deadline_s=20.0, hint=None):
    """POST /revoke until it answers 200 (revocation is idempotent); the successful response."""
    t_first = now()
    while True:
        form = {"token": token}
        if hint:
            form["token_type_hint"] = hint
        headers = client.auth(form)
        resp = http.call("revoke", "POST", "/revoke", form=form, headers=headers, event="token.revoked")
        if resp.ok and resp.status == 200:
            return resp
        if resp.ok:
            st.note_unexpected(resp.req, f"revoke answered {resp.status}: {resp.text()[:120]!r}")
            return None
        if now() - t_first > deadline_s:
            return None
        time.sleep(0.3)


def introspect(st, http, token, kind="introspect"):
    cfg = st.cfg
    return http.call(kind, "POST", "/introspect", form={"token": token},
                     headers=basic(cfg["rs_id"], cfg["rs_secret"]), event="introspection")


def client_credentials(st, http, kind="cc"):
    cfg = st.cfg
    form = {"grant_type": "client_credentials", "resource": cfg["resource"], "scope": "tools:read"}
    return http.call(kind, "POST", "/token", form=form, headers=basic(cfg["cc_id"], cfg["cc_secret"]),
                     event="token.issued")


# --- load workers -------------------------------------------------------------------------------

class Load:
    """The workers of one phase: started together, stopped together, each bounded by a count
    and by the phase's deadline."""

    def __init__(self, st, duration, max_ops=None, races=False, ports=None):
        # At most 1000 operations per worker and second of the phase's time cap: far above what one
        # Python thread reaches, but a bound.
        self.st, self.duration, self.races = st, duration, races
        self.max_ops = max_ops or int(max(20000, duration * 1000))
        self.stop = threading.Event()
        self.deadline = now() + duration
        self.threads = []
        self.ports = ports or {}

    def running(self, count):
        return not self.stop.is_set() and now() < self.deadline and count < self.max_ops

    def start(self):
        workers = [self.browser, self.browser, self.register, self.refresher, self.refresher, self.cc,
                   self.introspector, self.introspector, self.revoker]
        for i, w in enumerate(workers):
            t = threading.Thread(target=self._guard, args=(w, i), name=f"{w.__name__}-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _guard(self, fn, i):
        try:
            fn(i)
        except Exception as e:  # a bug in the harness must show, not hang the run
            with self.st.lock:
                self.st.unexpected.append(("harness", self.st.phase, f"{fn.__name__}: {type(e).__name__}: {e}"))

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT * 3)

    def _lb(self):
        return Http(self.st.rec, "lb", self.st.cfg["lb_port"])

    def browser(self, i):
        st = self.st
        http = self._lb()
        browser = Browser(st, http)
        n = 0
        while self.running(n):
            n += 1
            if n % 12 == 0:
                browser = Browser(st, http)  # a new person: a sign-in with a password
            with st.lock:
                dcr = [c for c in st.clients if c.origin == "dcr"]
            client = random.choice(dcr) if dcr and random.random() < 0.3 else st.clients[0]
            got = browser.code(client)
            if not got:
                with st.lock:
                    st.flows["failed"] += 1
                time.sleep(0.2)
                continue
            code, verifier = got
            with st.lock:
                st.flows["ok"] += 1
            if self.races and n % 10 == 0:
                self.race(client, code, verifier)
                continue
            resp = exchange_code(st, http, client, code, verifier)
            if resp.ok and resp.status == 200:
                with st.lock:
                    st.codes[code] = st.codes.get(code, 0) + 1
                new_chain(st, client, resp)
            elif resp.ok:
                st.note_unexpected(resp.req, f"code exchange answered {resp.status}: {resp.text()[:120]!r}")
            else:
                with st.lock:
                    st.code_losts.append((code, resp.req.rid))

    def race(self, client, code, verifier):
        """The same code presented at two instances at once, directly: exactly one may win, and
        the replay revokes what the winner got."""
        st = self.st
        names = [n for n in ("a", "b", "c") if st.up.get(n)]
        if len(names) < 2:
            return
        pair = random.sample(names, 2)
        results = [None, None]
        barrier = threading.Barrier(2)

        def go(k):
            http = Http(st.rec, pair[k], self.ports[pair[k]])
            barrier.wait(timeout=5)
            results[k] = exchange_code(st, http, client, code, verifier, kind="race")
            http.close()

        ts = [threading.Thread(target=go, args=(k,)) for k in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=REQUEST_TIMEOUT + 5)
        wins = [r for r in results if r and r.ok and r.status == 200]
        losses = [r for r in results if r and r.ok and r.status == 400 and r.json().get("error") == "invalid_grant"]
        for r in losses:
            r.req.event = None  # a refused exchange leaves token.denied / code.replay_detected, not token.issued
        with st.lock:
            st.codes[code] = st.codes.get(code, 0) + len(wins)
            st.races.append((len(wins), len(losses), [r.req.served if r else None for r in results]))
        if len(wins) == 1 and len(losses) == 1:
            chain = new_chain(st, client, wins[0])
            with st.lock:
                chain.state, chain.reason = "revoked", "code_replay"
            t_answer = max(wins[0].req.t1, losses[0].req.t1)
            chain.access.revoke_sent = chain.access.revoke_answered = t_answer
            st.add_revocation(Revocation("code replay", chain.access, t_answer, losses[0].req.rid, st.phase))

    def register(self, i):
        st = self.st
        http = self._lb()
        n = 0
        while self.running(n):
            n += 1
            body = {"client_name": f"cluster load client {n}", "redirect_uris": [st.cfg["redirect_uri"]],
                    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                    "token_endpoint_auth_method": "none"}
            resp = http.call("register", "POST", "/register", json_body=body, event="client.registered")
            if resp.ok and resp.status == 201:
                client_id = resp.json().get("client_id")
                with st.lock:
                    if sum(1 for c in st.clients if c.origin == "dcr") < 40:
                        st.clients.append(Client(client_id, None, "dcr"))
            elif resp.ok:
                st.note_unexpected(resp.req, f"registration answered {resp.status}: {resp.text()[:120]!r}")
            time.sleep(0.25)

    def refresher(self, i):
        st = self.st
        http = self._lb()
        n = 0
        while self.running(n):
            chain = st.take_chain()
            if not chain:
                time.sleep(0.1)
                continue
            n += 1
            try:
                refresh_chain(st, http, chain)
            finally:
                st.release(chain)

    def cc(self, i):
        st = self.st
        http = self._lb()
        n = 0
        while self.running(n):
            n += 1
            resp = client_credentials(st, http)
            if resp.ok and resp.status == 200:
                tok = Token(resp.json().get("access_token", ""), resp.req.served)
                with st.lock:
                    st.cc_tokens.append(tok)
                    if len(st.cc_tokens) > 400:
                        del st.cc_tokens[:100]
            elif resp.ok:
                st.note_unexpected(resp.req, f"client_credentials answered {resp.status}: {resp.text()[:120]!r}")
            time.sleep(0.02)

    def introspector(self, i):
        st = self.st
        http = self._lb()
        n = 0
        while self.running(n):
            with st.lock:
                pool = [c.access for c in st.chains[-300:] if c.state == "live"] + st.cc_tokens[-100:]
            young = [t for t in pool if now() - t.t_issued < 1800]
            if not young:
                time.sleep(0.1)
                continue
            n += 1
            time.sleep(0.01)
            tok = random.choice(young)
            sent = now()
            resp = introspect(st, http, tok.jwt)
            if not resp.ok:
                continue
            if resp.status != 200:
                st.note_unexpected(resp.req, f"introspection answered {resp.status}")
                continue
            active = resp.json().get("active")
            if active and tok.revoke_answered is not None and sent > tok.revoke_answered + st.cfg["bound"]:
                st.note_unexpected(resp.req, f"revoked token active {sent - tok.revoke_answered:.2f}s after "
                                             f"its revocation answered (served by {resp.req.served})")
            if not active and tok.revoke_sent is None:
                chain = tok.chain
                if chain is None or chain.state == "live" or chain.reason is None:
                    st.note_unexpected(resp.req, f"a live token inactive (served by {resp.req.served}, "
                                                 f"issued by {tok.issued_by})")

    def revoker(self, i):
        st = self.st
        http = self._lb()
        n = 0
        while self.running(n):
            time.sleep(0.3)
            chain = st.take_chain()
            if not chain:
                continue
            n += 1
            try:
                access = chain.access
                if random.random() < 0.5:
                    access.revoke_sent = now()
                    resp = revoke(st, http, chain.client, access.jwt, hint="access_token")
                    if resp:
                        access.revoke_answered = resp.req.t1
                        st.add_revocation(Revocation("access token", access, resp.req.t1, resp.req.rid, st.phase))
                else:
                    for t in chain.tokens:
                        t.revoke_sent = t.revoke_sent or now()
                    with st.lock:
                        chain.state, chain.reason = "revoked", "revoked_by_client"
                    resp = revoke(st, http, chain.client, chain.refresh, hint="refresh_token")
                    if resp:
                        for t in chain.tokens:
                            t.revoke_answered = t.revoke_answered or resp.req.t1
                        st.add_revocation(Revocation("refresh token (grant)", access, resp.req.t1, resp.req.rid,
                                                     st.phase))
                    else:
                        with st.lock:
                            chain.state, chain.reason = "uncertain", "revocation unanswered"
            finally:
                st.release(chain)


class Prober:
    """Introspects every revoked token at each instance directly, by its own port, from the
    moment the revocation answered until each says inactive (or 1.5 bounds have passed); an
    'active' answer to a probe sent later than the bound after the revocation answered is a
    violation."""

    def __init__(self, st, ports):
        self.st, self.ports = st, ports
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self.https = {}

    def start(self):
        self.thread.start()

    def close(self):
        self.stop.set()
        with self.st.probe_cv:
            self.st.probe_cv.notify_all()
        self.thread.join(timeout=60)

    def _http(self, name):
        # One connection per thread (the prober's own, and the harness's checks call probe_now
        # too) and per process of the instance.
        key = (threading.get_ident(), name, self.st.incarnation.get(name, 0))
        if key not in self.https:
            self.https[key] = Http(self.st.rec, name, self.ports[name], timeout=8.0)
        return self.https[key]

    def probe_now(self, r, names=None, until=None):
        """Probe one revocation until every named instance answered inactive, or `until`."""
        st = self.st
        bound = st.cfg["bound"]
        until = until or r.t_answer + bound * 1.5
        pending = set(names or [n for n in self.ports if st.up.get(n)])
        while pending and now() < until:
            for name in sorted(pending):
                if not st.up.get(name):
                    pending.discard(name)
                    continue
                sent = now()
                resp = introspect(st, self._http(name), r.token.jwt, kind="probe")
                if not resp.ok or resp.status != 200:
                    self._http(name).close()
                    if resp.ok:
                        resp.req.event = None
                    r.inconclusive[name] = r.inconclusive.get(name, 0) + 1
                    continue
                if resp.json().get("active"):
                    if sent - r.t_answer > bound:
                        r.late_active.append((name, round(sent - r.t_answer, 3)))
                else:
                    r.first_inactive.setdefault(name, round(resp.req.t1 - r.t_answer, 3))
                    pending.discard(name)
            if pending:
                time.sleep(0.05)
        return pending

    def _run(self):
        st = self.st
        while not self.stop.is_set():
            with st.probe_cv:
                while not st.probe_queue and not self.stop.is_set():
                    st.probe_cv.wait(timeout=0.5)
                if self.stop.is_set() and not st.probe_queue:
                    return
                r = st.probe_queue.pop(0)
            left = self.probe_now(r)
            # An instance that could not answer in time (the database restarting): ask again
            # once it can, bounded; when it answers, it must say inactive.
            if left:
                self.probe_now(r, names=left, until=now() + 30)
