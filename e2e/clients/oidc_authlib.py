"""An OpenID Connect relying party built with Authlib (PyPI `Authlib` 1.9.10 by Hsiaoming Yang,
pinned in requirements.txt, with `requests` 2.34.2 and Authlib's JOSE library `joserfc` 1.8.0),
unmodified, signs a person in at Tessera as its OpenID Provider. Only Authlib's documented API
is used (https://docs.authlib.org/en/latest/client/oauth2.html "OAuth 2 Session",
https://docs.authlib.org/en/latest/specs/oidc.html, source https://github.com/authlib/authlib):

  authlib.oidc.discovery.get_well_known_url(issuer, external=True) and
  OpenIDProviderMetadata(...).validate(metadata_classes=[authlib.oidc.rpinitiated.OpenIDProviderMetadata])
      OpenID Connect Discovery 1.0 metadata, RFC 8414 and RP-Initiated Logout checks (https
      endpoints: Authlib 1.9 accepts http on a loopback host by itself, RFC 8252 §7.3, so no
      AUTHLIB_INSECURE_TRANSPORT is needed)
  authlib.integrations.requests_client.OAuth2Session(client_id, client_secret,
      token_endpoint_auth_method="client_secret_basic", code_challenge_method="S256", ...)
      a confidential client (added with `tessera client add --confidential --id-token-alg ES256`)
  authlib.common.security.generate_token   the PKCE code_verifier (48 chars) and the nonce
  OAuth2Session.create_authorization_url(url, code_verifier=..., nonce=..., prompt=...)
  OAuth2Session.fetch_token(url, authorization_response=..., state=..., code_verifier=...)
      checks state (MismatchingStateException), sends code + code_verifier with HTTP Basic
  OAuth2Session.refresh_token(url)   and OAuth2Session.get(userinfo_endpoint) (Bearer)
  authlib.oidc.core.CodeIDToken(claims, header, options, params).validate()   the ID token:
      iss, aud (options), exp, iat, nonce, azp, auth_time, at_hash (params: nonce, client_id,
      access_token), after joserfc.jwt.decode has checked the ES256 signature with the keys of
      jwks_uri (joserfc.jwk.KeySet.import_key_set). That is what Authlib's own OpenID client
      (OpenIDMixin.parse_id_token) does in 1.9: its older `authlib.jose` module is deprecated
      in favour of joserfc ("authlib.jose module is deprecated, please use joserfc instead").
  authlib.oidc.core.UserInfo   the userinfo claims
  authlib.common.urls.add_params_to_uri   the RP-initiated logout URL (OAuth2Session has no
      end-session helper; Authlib's framework clients build it the same way in create_logout_url)

Authlib does not check RFC 9207 `iss` in the authorization response, that the userinfo `sub`
equals the ID token's (OpenID Connect Core §5.3.4), that an ID token has `at_hash` at all (it
checks one that is there), nor what a refreshed ID token must keep (Core §12.2): the journey
checks those itself. The person's browser is browser.py (login and consent forms over HTTP), and
the RP-initiated logout is followed with that browser's cookies.
Run by e2e/run with $E2E_CONFIG; prints what the journey does; exits non-zero on a failure.

    E2E_CONFIG=... python oidc_authlib.py [JOURNEY ...]
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import sys
import time
import traceback
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlparse

import anyio
import httpx2
import requests
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import MissingCodeException
from authlib.oauth2.rfc6749.parameters import parse_authorization_code_response
from authlib.oidc import rpinitiated
from authlib.oidc.core import CodeIDToken, UserInfo
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url
from joserfc import jwt
from joserfc.jwk import KeySet

from browser import Browser, BrowserError

CFG: dict[str, Any] = json.load(open(os.environ["E2E_CONFIG"], encoding="utf-8"))
ISSUER: str = CFG["issuer"]
OIDC: dict[str, Any] = CFG["oidc"]
SCOPE = "openid profile email offline_access"
AUTHLIB = importlib.metadata.version("Authlib")


def say(line: str) -> None:
    print(line, flush=True)


class Failed(Exception):
    pass


def check(cond: Any, what: str) -> None:
    if not cond:
        raise Failed(what)


def short(value: str | None) -> str:
    if value is None:
        return "None"
    return value if len(value) <= 40 else value[:37] + "..."


class Trace:
    """Every HTTP exchange of the Authlib session (a requests response hook) and what the browser
    did, printed step by step."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.mark = 0

    def note(self, text: str) -> None:
        self.events.append({"note": text})

    def on_response(self, res: requests.Response, *args: Any, **kwargs: Any) -> None:
        req = res.request
        path = urlparse(req.url).path
        label, kind, auth, form = path, "", "", {}
        if req.method == "POST" and path == "/token":
            body = req.body or ""
            form = {k: v[0] for k, v in parse_qs(body.decode() if isinstance(body, bytes) else body).items()}
            kind = form.get("grant_type", "?")
            if req.headers.get("Authorization", "").startswith("Basic "):
                auth = "client_secret_basic"
                label += " (Basic" + (" + client_id in body)" if "client_id" in form else ")")
            elif "client_secret" in form:
                auth = "client_secret_post"
            else:
                auth = "none"
        elif req.headers.get("Authorization", "").startswith("Bearer "):
            label += " (Bearer)"
        error = ""
        if res.status_code >= 400:
            try:
                error = " " + res.json().get("error", "")
            except ValueError:
                pass
        self.events.append({"method": req.method, "path": path, "kind": kind, "auth": auth, "form": form,
                            "status": res.status_code, "error": error.strip(),
                            "text": f"{req.method} tessera {label}{kind and ' ' + kind} -> {res.status_code}{error}"})

    def flush(self, indent: str = "      ") -> None:
        for e in self.events[self.mark:]:
            say(f"{indent}{e['note'] if 'note' in e else e['text']}")
        self.mark = len(self.events)

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[since:] if "note" not in e]


def half_hash(token: str) -> str:
    """OpenID Connect Core §3.1.3.6: base64url of the left half of SHA-256 (ES256) of the token."""
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode("ascii")).digest()[:16]).rstrip(b"=").decode()


def check_identity(claims: dict[str, Any], what: str) -> None:
    check(claims.get("sub") == OIDC["sub"], f"{what}: sub {claims.get('sub')}, want the seeded user's {OIDC['sub']}")
    check(claims.get("email") == OIDC["email"] and claims.get("email_verified") is True,
          f"{what}: email {claims.get('email')} verified={claims.get('email_verified')}")
    check(claims.get("name") == OIDC["name"], f"{what}: name {claims.get('name')!r}, want {OIDC['name']!r}")
    check(claims.get("preferred_username") == OIDC["username"], f"{what}: preferred_username {claims.get('preferred_username')}")
    check(isinstance(claims.get("updated_at"), int), f"{what}: updated_at {claims.get('updated_at')}")


def validate_id_token(id_token: str, *, jwks: dict[str, Any], client_id: str, access_token: str,
                      nonce: str | None) -> CodeIDToken:
    """Signature (joserfc, ES256 only, keys of jwks_uri), then Authlib's CodeIDToken checks."""
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    claims = CodeIDToken(
        token.claims,
        token.header,
        {"iss": {"essential": True, "value": ISSUER}, "aud": {"essential": True, "value": client_id},
         "exp": {"essential": True}, "iat": {"essential": True}},
        {"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    claims.validate(leeway=5)
    return claims


JOURNEYS: dict[str, Callable[[], Awaitable[None]]] = {}


def journey(name: str) -> Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    def register(fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        JOURNEYS[name] = fn
        return fn

    return register


@journey("oidc-authlib")
async def authlib_journey() -> None:
    """Authlib as an OpenID Connect relying party, confidential client (client_secret_basic) with
    ES256 ID tokens: discovery (metadata validated by Authlib), authorization code + PKCE S256 +
    nonce + state, login + consent, ID token validated with CodeIDToken against the JWKS
    (signature, iss, aud, exp, nonce, at_hash), userinfo, refresh (new ID token validated,
    rotated refresh token), prompt=none, RP-initiated logout (303 to the registered URI with
    state) and prompt=none -> login_required afterwards."""
    rp = OIDC["clients"]["authlib"]
    t = Trace()
    http = requests.Session()
    http.trust_env = False
    http.hooks["response"].append(t.on_response)

    url = get_well_known_url(ISSUER, external=True)
    say(f"    discovery: {url}")
    res = http.get(url, timeout=15)
    check(res.status_code == 200, f"discovery: {res.status_code}")
    meta = OpenIDProviderMetadata(res.json())
    meta.validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])
    t.flush()
    check(meta["issuer"] == ISSUER, f"issuer {meta['issuer']}")
    check("ES256" in meta["id_token_signing_alg_values_supported"], "ES256 among id_token_signing_alg_values_supported")
    check("client_secret_basic" in meta["token_endpoint_auth_methods_supported"], "client_secret_basic supported")
    say(f"    OpenIDProviderMetadata.validate(+ rpinitiated): ok; issuer {meta['issuer']}, end_session_endpoint {meta['end_session_endpoint']}")
    jwks = http.get(meta["jwks_uri"], timeout=15).json()
    t.flush()
    say(f"    jwks_uri: keys {[(k.get('kty'), k.get('alg'), short(k.get('kid'))) for k in jwks['keys']]}")

    session = OAuth2Session(
        rp["client_id"], rp["client_secret"], token_endpoint_auth_method="client_secret_basic",
        scope=SCOPE, redirect_uri=rp["redirect_uri"], code_challenge_method="S256",
        token_endpoint=meta["token_endpoint"],
    )
    session.trust_env = False
    session.hooks["response"].append(t.on_response)

    browser = Browser(ISSUER, OIDC["username"], OIDC["password"], log=t.note)
    try:
        async def authorize(b: Browser = browser, **extra: str) -> tuple[str, str, str, str]:
            """Authlib builds the authorization URL; the browser signs in / consents as needed.
            Returns (callback URL, state, code_verifier, nonce)."""
            verifier, nonce = generate_token(48), generate_token(20)
            auth_url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                               nonce=nonce, **extra)
            q = {k: v[0] for k, v in parse_qs(urlparse(auth_url).query).items()}
            check(q.get("code_challenge_method") == "S256" and q.get("code_challenge") and q.get("nonce") == nonce
                  and "resource" not in q, f"authorization URL {auth_url}")
            t.note(f"create_authorization_url: /authorize scope='{q.get('scope')}' code_challenge_method=S256 nonce state"
                   f"{' prompt=' + q['prompt'] if 'prompt' in q else ''}")
            with anyio.fail_after(30):
                callback = await b.authorize(auth_url)
            cb = urlparse(callback)
            check(f"{cb.scheme}://{cb.netloc}{cb.path}" == rp["redirect_uri"], f"redirected to {callback}")
            return callback, state, verifier, nonce

        say(f"    authorize (scope '{SCOPE}'): the person signs in and consents")
        callback, state, verifier, nonce = await authorize()
        t.flush()
        check(browser.pages == ["login", "consent"], f"pages seen: {browser.pages}")
        cbq = {k: v[0] for k, v in parse_qs(urlparse(callback).query).items()}
        check(cbq.get("iss") == ISSUER, f"RFC 9207 iss {cbq.get('iss')} (checked here: Authlib does not)")

        mark = len(t.events)
        token = session.fetch_token(meta["token_endpoint"], authorization_response=callback, state=state,
                                    code_verifier=verifier)
        t.flush()
        exchange = [r for r in t.requests(mark) if r["path"] == "/token"]
        check(len(exchange) == 1 and exchange[0]["auth"] == "client_secret_basic"
              and "client_secret" not in exchange[0]["form"] and exchange[0]["form"].get("code_verifier") == verifier
              and "resource" not in exchange[0]["form"], f"one code exchange with HTTP Basic and the code_verifier: {exchange}")
        check(token.get("id_token") and token.get("refresh_token"), f"id_token and refresh_token: {sorted(token)}")
        check(str(token.get("token_type")).lower() == "bearer", f"token_type {token.get('token_type')}")
        granted = str(token.get("scope", "")).split()
        check({"openid", "profile", "email", "offline_access"} <= set(granted), f"granted scope {token.get('scope')!r}")
        claims = validate_id_token(token["id_token"], jwks=jwks, client_id=rp["client_id"],
                                   access_token=token["access_token"], nonce=nonce)
        check(claims.header.get("alg") == "ES256" and claims.header.get("kid"), f"ID token header {claims.header}")
        check(claims.get("at_hash") == half_hash(token["access_token"]), "at_hash present (and Authlib checked its value)")
        check(claims.get("azp") == rp["client_id"] and claims.get("aud") == rp["client_id"], f"aud/azp {claims.get('aud')} {claims.get('azp')}")
        check(isinstance(claims.get("sid"), str) and claims["sid"], f"sid {claims.get('sid')}")
        now = time.time()
        check(isinstance(claims.get("auth_time"), int) and now - 60 < claims["auth_time"] <= now + 5, f"auth_time {claims.get('auth_time')}")
        check_identity(claims, "ID token")
        say(f"    fetch_token (Basic, code_verifier, state checked by Authlib): expires_in {token.get('expires_in')}, scope {token.get('scope')!r}")
        say(f"    ID token {claims.header['alg']} (kid {short(claims.header['kid'])}): signature by joserfc with the JWKS, "
            f"CodeIDToken.validate() (Authlib {AUTHLIB}): iss, aud, exp, iat, nonce, azp, auth_time, at_hash")
        say(f"      claims: sub {claims['sub']}, name {claims['name']!r}, email {claims['email']} (verified), sid {short(claims['sid'])}")

        # --- UserInfo (Bearer from the session) -------------------------------------------------
        mark = len(t.events)
        res = session.get(meta["userinfo_endpoint"], timeout=15)
        t.flush()
        check(res.status_code == 200, f"userinfo {res.status_code} {res.text}")
        check([r["path"] for r in t.requests(mark)] == ["/userinfo"], "userinfo without a refresh first")
        userinfo = UserInfo(res.json())
        check(userinfo.sub == claims["sub"], f"userinfo sub {userinfo.sub} = the ID token's (Core §5.3.4)")
        check_identity(userinfo, "userinfo")
        say(f"    userinfo: {dict(userinfo)}")

        # --- Refresh ------------------------------------------------------------------------------
        mark = len(t.events)
        refreshed = session.refresh_token(meta["token_endpoint"])
        t.flush()
        grants = [r for r in t.requests(mark) if r["path"] == "/token"]
        check(len(grants) == 1 and grants[0]["kind"] == "refresh_token" and grants[0]["auth"] == "client_secret_basic",
              f"one refresh with HTTP Basic: {grants}")
        check(refreshed.get("id_token") and refreshed["id_token"] != token["id_token"], "the refresh returned a new ID token")
        again = validate_id_token(refreshed["id_token"], jwks=jwks, client_id=rp["client_id"],
                                  access_token=refreshed["access_token"], nonce=None)
        check(again.header.get("alg") == "ES256", "refreshed ID token ES256")
        check(again["sub"] == claims["sub"] and again["iss"] == ISSUER and again["aud"] == rp["client_id"],
              "refreshed: same iss, sub, aud (Core §12.2)")
        check(again.get("auth_time") == claims["auth_time"] and again.get("sid") == claims["sid"],
              f"refreshed: same auth_time ({again.get('auth_time')}) and sid")
        check("nonce" not in again, f"refreshed: no nonce ({again.get('nonce')})")
        check(again.get("at_hash") == half_hash(refreshed["access_token"]), "refreshed: at_hash of the new access token")
        check_identity(again, "refreshed ID token")
        check(refreshed.get("refresh_token") not in (None, token["refresh_token"]), "refresh token rotated")
        check(session.token["access_token"] == refreshed["access_token"], "the session holds the new tokens")
        res = session.get(meta["userinfo_endpoint"], timeout=15)
        t.flush()
        check(res.status_code == 200 and res.json().get("sub") == claims["sub"], "userinfo with the refreshed access token")
        say("    refresh_token: new ES256 ID token validated (CodeIDToken, at_hash of the new access token); same sub, "
            "auth_time and sid, no nonce; refresh token rotated; userinfo ok with the new access token")

        # --- The session is alive: prompt=none signs in without a page --------------------------------
        callback, state, verifier, nonce = await authorize(prompt="none")
        t.flush()
        check(browser.pages == ["login", "consent"], f"prompt=none showed no page ({browser.pages})")
        silent = session.fetch_token(meta["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier)
        t.flush()
        silent_claims = validate_id_token(silent["id_token"], jwks=jwks, client_id=rp["client_id"],
                                          access_token=silent["access_token"], nonce=nonce)
        check(silent_claims["sid"] == claims["sid"] and silent_claims["auth_time"] == claims["auth_time"],
              "prompt=none: same browser session (sid, auth_time)")
        say("    prompt=none while signed in: a code at once (no page); its ID token has the same sid and auth_time")

        # --- RP-initiated logout ---------------------------------------------------------------------
        signed_in = httpx2.Cookies(browser.http.cookies)
        logout_state = generate_token(20)
        end_session = add_params_to_uri(meta["end_session_endpoint"], [
            ("id_token_hint", refreshed["id_token"]), ("post_logout_redirect_uri", rp["post_logout_redirect_uri"]),
            ("state", logout_state)])
        say("    RP-initiated logout: the browser opens end_session_endpoint?id_token_hint&post_logout_redirect_uri&state")
        res = await browser.http.get(end_session)
        location = res.headers.get("location", "")
        say(f"      GET tessera /logout -> {res.status_code} Location: {location}")
        check(res.status_code == 303, f"end session answered {res.status_code}, want 303")
        back = urlparse(location)
        check(f"{back.scheme}://{back.netloc}{back.path}" == rp["post_logout_redirect_uri"],
              f"redirected to {location}, want {rp['post_logout_redirect_uri']}")
        check(parse_qs(back.query).get("state") == [logout_state], f"state {parse_qs(back.query).get('state')}")
        say(f"      cookies the browser holds: before the logout {', '.join(sorted(signed_in.keys())) or 'none'}; "
            f"after it {', '.join(sorted(browser.http.cookies.keys())) or 'none'}")

        # The session really ended: prompt=none comes back with login_required, in this browser and
        # in one replaying the cookies it held before the logout (the session is gone on the server).
        replay = Browser(ISSUER, OIDC["username"], OIDC["password"], log=t.note)
        replay.http.cookies = signed_in
        try:
            for who, b in (("the same browser", browser), ("a browser replaying the cookies held before the logout", replay)):
                callback, state, _, _ = await authorize(b, prompt="none")
                t.flush()
                try:
                    parse_authorization_code_response(callback, state=state)
                    raise Failed(f"after logout, prompt=none ({who}) got a code: {callback}")
                except MissingCodeException:
                    pass
                q = {k: v[0] for k, v in parse_qs(urlparse(callback).query).items()}
                check(q.get("error") == "login_required" and q.get("state") == state and q.get("iss") == ISSUER,
                      f"after logout, prompt=none ({who}): {q}")
                say(f"    after logout, prompt=none in {who}: no code (Authlib: MissingCodeException), "
                    f"error={q['error']} ({q.get('error_description', '')})")
        finally:
            await replay.aclose()
    finally:
        await browser.aclose()
        session.close()
        http.close()


async def main(selected: list[str]) -> int:
    names = selected or list(JOURNEYS)
    passed, failed = [], []
    for name in names:
        fn = JOURNEYS.get(name)
        if fn is None:
            failed.append(name)
            say(f"FAIL {name}: no such journey in oidc_authlib.py")
            continue
        say(f"\n== journey {name} (Authlib {AUTHLIB}, requests {importlib.metadata.version('requests')}): "
            f"{' '.join((fn.__doc__ or '').split())}")
        started = time.monotonic()
        try:
            with anyio.fail_after(120):
                await fn()
        except Exception as e:  # noqa: BLE001 - one journey's failure must not stop the others
            failed.append(name)
            say(f"FAIL {name} ({time.monotonic() - started:.1f}s): {type(e).__name__}: {e}")
            if not isinstance(e, (Failed, BrowserError)):
                traceback.print_exception(e, file=sys.stdout)
            continue
        passed.append(name)
        say(f"PASS {name} ({time.monotonic() - started:.1f}s)")
    say(f"\nauthlib journeys: {len(passed)} passed, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
