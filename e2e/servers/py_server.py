"""A protected MCP server built with the official Python SDK that trusts Tessera.

Two tools: `whoami` (scope tools:read, also what every connection needs) and `add_note`
(scope tools:write). The SDK serves RFC 9728 protected resource metadata, answers 401 with
`WWW-Authenticate: Bearer ... resource_metadata="..."`, and asks a TokenVerifier about each
bearer token. `--verify jwks` checks the JWT locally against Tessera's JWKS (signature, typ
at+jwt, iss, aud = this server's canonical URI, exp); `--verify introspect` asks Tessera's
/introspect with this resource's credentials (env TESSERA_RS_CLIENT_ID / _SECRET).
A tool call whose scope the token lacks is answered 403 insufficient_scope (ToolScopeGate).

    python py_server.py --issuer http://127.0.0.1:8080 --resource http://127.0.0.1:3001/mcp \
        --verify jwks
"""

import argparse
import json
import os
import time
from typing import Any

import anyio
import httpx2
import jwt
import uvicorn
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer


class TesseraJwtVerifier(TokenVerifier):
    """Verify Tessera's RFC 9068 access tokens locally against its JWKS."""

    def __init__(self, issuer: str, resource: str):
        self.issuer = issuer  # exactly as Tessera publishes it: no trailing slash
        self.resource = resource  # this server's canonical URI: the token's `aud`
        # Caches the keys and refetches when a token names an unknown kid (key rotation).
        self.jwks = jwt.PyJWKClient(f"{issuer}/jwks.json", lifespan=300, timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            if jwt.get_unverified_header(token).get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
                return None  # an ID token or other JWT is not an access token (RFC 9068 §4)
            key = await anyio.to_thread.run_sync(self.jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                issuer=self.issuer,
                audience=self.resource,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "client_id"]},
            )
        except jwt.PyJWTError:
            return None
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=claims.get("scope", "").split(),
            expires_at=claims["exp"],
            resource=claims["aud"],
            subject=claims["sub"],
            claims=claims,
        )


class TesseraIntrospectionVerifier(TokenVerifier):
    """Ask Tessera (RFC 7662) with this resource's credentials from `tessera resource add`."""

    def __init__(self, issuer: str, resource: str, client_id: str, client_secret: str):
        self.issuer, self.resource = issuer, resource
        self.endpoint = f"{issuer}/introspect"
        self.http = httpx2.AsyncClient(auth=(client_id, client_secret), timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            res = await self.http.post(self.endpoint, data={"token": token, "token_type_hint": "access_token"})
        except httpx2.HTTPError:
            return None
        if res.status_code != 200:
            return None
        info = res.json()
        # Tessera answers active only for tokens whose aud is the calling resource; check anyway.
        if not info.get("active") or info.get("aud") != self.resource or info.get("iss", self.issuer) != self.issuer:
            return None
        return AccessToken(
            token=token,
            client_id=info["client_id"],
            scopes=info.get("scope", "").split(),
            expires_at=info.get("exp"),
            resource=info["aud"],
            subject=info.get("sub"),
            claims=info,
        )


class ToolScopeGate:
    """403 insufficient_scope (RFC 6750 §3.1) for a tools/call whose scope the token lacks.

    The SDK checks `required_scopes` for the whole endpoint; a per-tool scope has to be
    checked before the JSON-RPC request reaches the tool, where the HTTP status is still ours
    to choose, so clients see the challenge and step up. The `scope` parameter names what the
    token already has plus what the tool needs (clients that replace their scope rather than
    adding to it then still keep what they had)."""

    MAX_BODY = 1 << 20

    def __init__(self, app: ASGIApp, tool_scopes: dict[str, str], resource_metadata_url: str):
        self.app, self.tool_scopes, self.resource_metadata_url = app, tool_scopes, resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if scope["type"] != "http" or scope["method"] != "POST" or not isinstance(user, AuthenticatedUser):
            await self.app(scope, receive, send)
            return
        messages: list[dict[str, Any]] = []
        body = b""
        while len(body) <= self.MAX_BODY:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        missing = [s for s in self.scopes_needed(body) if s not in user.scopes]
        if missing:
            wanted = " ".join(dict.fromkeys([*user.scopes, *missing]))
            challenge = (
                f'Bearer error="insufficient_scope", scope="{wanted}", '
                f'resource_metadata="{self.resource_metadata_url}", '
                f'error_description="this tool needs {" ".join(missing)}"'
            )
            payload = json.dumps({"error": "insufficient_scope", "error_description": f"needs {' '.join(missing)}"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", challenge.encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload.encode()})
            return

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def scopes_needed(self, body: bytes) -> list[str]:
        try:
            doc = json.loads(body)
        except ValueError:
            return []
        needed = []
        for msg in doc if isinstance(doc, list) else [doc]:
            if isinstance(msg, dict) and msg.get("method") == "tools/call":
                name = (msg.get("params") or {}).get("name")
                if name in self.tool_scopes:
                    needed.append(self.tool_scopes[name])
        return needed


def build(issuer: str, resource: str, verify: str) -> Any:
    if verify == "jwks":
        verifier: TokenVerifier = TesseraJwtVerifier(issuer, resource)
    else:
        verifier = TesseraIntrospectionVerifier(
            issuer, resource, os.environ["TESSERA_RS_CLIENT_ID"], os.environ["TESSERA_RS_CLIENT_SECRET"]
        )
    mcp = MCPServer(
        name=f"tessera-e2e-py-{verify}",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=issuer,  # published in the protected resource metadata as authorization server
            resource_server_url=resource,
            required_scopes=["tools:read"],  # every request; also the metadata's scopes_supported
            validate_token_resource=True,  # refuse tokens whose aud is another resource
        ),
    )
    notes: list[str] = []

    @mcp.tool()
    def whoami() -> dict[str, Any]:
        """Who the bearer token says is calling (needs tools:read)."""
        token = get_access_token()
        assert token is not None
        return {
            "server": f"python/{verify}",
            "sub": token.subject,
            "client_id": token.client_id,
            "scopes": token.scopes,
            "aud": token.resource,
            "expires_in": (token.expires_at or 0) - int(time.time()),
        }

    @mcp.tool()
    def add_note(text: str) -> str:
        """Store a note (needs tools:write)."""
        notes.append(text)
        return f"stored note #{len(notes)}"

    app = mcp.streamable_http_app(stateless_http=True, json_response=True)
    # Innermost, after the SDK's authentication middleware has put the token in scope["user"].
    app.user_middleware.append(
        Middleware(
            ToolScopeGate,
            tool_scopes={"add_note": "tools:write"},
            resource_metadata_url=str(build_resource_metadata_url(resource)),
        )
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--resource", required=True, help="canonical URI, e.g. http://127.0.0.1:3001/mcp")
    parser.add_argument("--verify", choices=["jwks", "introspect"], required=True)
    args = parser.parse_args()
    port = httpx2.URL(args.resource).port
    app = build(args.issuer, args.resource, args.verify)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
