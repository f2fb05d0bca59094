"""A person at a browser, as plain HTTP: follows Tessera's redirects, signs in on the login
page and answers the consent page with the form posts a browser sends (session cookie, hidden
csrf_token and request fields, Origin and Sec-Fetch-Site), until Tessera redirects to the
client's redirect URI. The client's callback is never called: its URL is handed back.

With `upstream` set, the person signs in through an identity provider instead: the provider's
button on Tessera's login page, then the provider's own login and consent pages (another site,
its own cookies), back to Tessera's callback and on to Tessera's consent."""

import html
import re
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2


class BrowserError(Exception):
    pass


class Upstream:
    """An identity provider (another Tessera) the person signs in at: its name at Tessera (the
    button's form posts to /login/upstream/NAME), its issuer, and the person's account there."""

    def __init__(self, name: str, issuer: str, username: str, password: str):
        self.name, self.issuer, self.username, self.password = name, issuer, username, password


class Browser:
    def __init__(self, issuer: str, username: str, password: str, log=print, upstream: Upstream | None = None):
        self.issuer, self.username, self.password, self.log = issuer, username, password, log
        self.upstream = upstream
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=15, trust_env=False)
        self.pages: list[str] = []  # what the person saw, in order: "login", "consent", "provider login", ...

    async def aclose(self) -> None:
        await self.http.aclose()

    def forget_session(self) -> None:
        """A new browser profile: the next authorization asks for the password again."""
        self.http.cookies.clear()

    async def authorize(self, url: str, decision: str = "allow") -> str:
        """Drive an authorization URL to the redirect back to the client; return that URL."""
        seen = []
        res = await self.http.get(url)
        up = self.upstream
        for _ in range(12):
            if res.status_code not in (302, 303):
                raise BrowserError(f"expected a redirect from {res.request.url.path}, got {res.status_code}: "
                                   f"{self._page_text(res)}")
            nxt = urljoin(str(res.request.url), res.headers["location"])
            if up and nxt.startswith(f"{up.issuer}/login"):
                seen.append("provider login")
                res = await self._submit(nxt, {"username": up.username, "password": up.password}, "/login", up.issuer)
            elif up and nxt.startswith(f"{up.issuer}/consent"):
                seen.append("provider consent")
                res = await self._submit(nxt, {"decision": "allow"}, "/consent", up.issuer)
            elif up and (nxt.startswith(f"{up.issuer}/") or nxt.startswith(f"{self.issuer}/login/upstream/")):
                res = await self.http.get(nxt)  # the provider's /authorize, or back at Tessera's callback
            elif up and nxt.startswith(f"{self.issuer}/login"):
                seen.append(f"login (button {up.name})")
                res = await self._submit(nxt, {}, f"/login/upstream/{up.name}", self.issuer)
            elif nxt.startswith(f"{self.issuer}/login"):
                seen.append("login")
                res = await self._submit(nxt, {"username": self.username, "password": self.password}, "/login")
            elif nxt.startswith(f"{self.issuer}/consent"):
                seen.append("consent")
                res = await self._submit(nxt, {"decision": decision}, "/consent")
            else:
                self.pages.extend(seen)
                self.log(f"browser: {' + '.join(seen) or 'no page (remembered)'} -> redirect to "
                         f"{urlparse(nxt).path} with {', '.join(sorted(parse_qs(urlparse(nxt).query)))}")
                return nxt
        raise BrowserError("too many redirects")

    async def _submit(self, page_url: str, fields: dict[str, str], action: str,
                      site: str | None = None) -> httpx2.Response:
        """Fill and post the page's form whose action ends with `action` (the login page has
        one form per identity provider before the password form)."""
        page = await self.http.get(page_url)
        if page.status_code != 200:
            raise BrowserError(f"{urlparse(page_url).path}: {page.status_code} {self._page_text(page)}")
        forms = re.findall(r'<form method="post" action="([^"]+)"(.*?)</form>', page.text, re.S)
        form = next(((a, body) for a, body in forms if html.unescape(a).endswith(action)), None)
        if not form:
            raise BrowserError(f"no form posting to ...{action} on {page_url}")
        data = {name: html.unescape(value) for name, value in
                re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form[1])}
        # Checked, enabled checkboxes are sent as a browser sends them (the consent page's scopes).
        for name, value, disabled in re.findall(
                r'<input type="checkbox"[^>]*? name="([^"]+)" value="([^"]*)" checked( disabled)?', form[1]):
            if not disabled:
                data[html.unescape(name)] = html.unescape(value)
        data.update(fields)
        site = urlparse(site or self.issuer)
        origin = f"{site.scheme}://{site.netloc}"
        return await self.http.post(
            urljoin(page_url, html.unescape(form[0])),
            data=data,
            headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )

    @staticmethod
    def _page_text(res: httpx2.Response) -> str:
        text = re.sub(r"<[^>]+>", " ", res.text)
        return " ".join(text.split())[:300]
