"""A person at a browser, as plain HTTP: follows Tessera's redirects, signs in on the login
page and answers the consent page with the form posts a browser sends (session cookie, hidden
csrf_token and request fields, Origin and Sec-Fetch-Site), until Tessera redirects to the
client's redirect URI. The client's callback is never called: its URL is handed back."""

import html
import re
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2


class BrowserError(Exception):
    pass


class Browser:
    def __init__(self, issuer: str, username: str, password: str, log=print):
        self.issuer, self.username, self.password, self.log = issuer, username, password, log
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=15, trust_env=False)
        self.pages: list[str] = []  # what the person saw, in order: "login", "consent"

    async def aclose(self) -> None:
        await self.http.aclose()

    def forget_session(self) -> None:
        """A new browser profile: the next authorization asks for the password again."""
        self.http.cookies.clear()

    async def authorize(self, url: str, decision: str = "allow") -> str:
        """Drive an authorization URL to the redirect back to the client; return that URL."""
        seen = []
        res = await self.http.get(url)
        for _ in range(6):
            if res.status_code not in (302, 303):
                raise BrowserError(f"expected a redirect from {res.request.url.path}, got {res.status_code}: "
                                   f"{self._page_text(res)}")
            nxt = urljoin(str(res.request.url), res.headers["location"])
            if nxt.startswith(f"{self.issuer}/login"):
                seen.append("login")
                res = await self._submit(nxt, {"username": self.username, "password": self.password})
            elif nxt.startswith(f"{self.issuer}/consent"):
                seen.append("consent")
                res = await self._submit(nxt, {"decision": decision})
            else:
                self.pages.extend(seen)
                self.log(f"browser: {' + '.join(seen) or 'no page (remembered)'} -> redirect to "
                         f"{urlparse(nxt).path} with {', '.join(sorted(parse_qs(urlparse(nxt).query)))}")
                return nxt
        raise BrowserError("too many redirects")

    async def _submit(self, page_url: str, fields: dict[str, str]) -> httpx2.Response:
        page = await self.http.get(page_url)
        if page.status_code != 200:
            raise BrowserError(f"{urlparse(page_url).path}: {page.status_code} {self._page_text(page)}")
        text = page.text
        form = re.search(r'<form method="post" action="([^"]+)"', text)
        if not form:
            raise BrowserError(f"no form on {page_url}")
        data = {name: html.unescape(value) for name, value in
                re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', text)}
        data.update(fields)
        origin = f"{urlparse(self.issuer).scheme}://{urlparse(self.issuer).netloc}"
        return await self.http.post(
            urljoin(page_url, html.unescape(form.group(1))),
            data=data,
            headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )

    @staticmethod
    def _page_text(res: httpx2.Response) -> str:
        text = re.sub(r"<[^>]+>", " ", res.text)
        return " ".join(text.split())[:300]
