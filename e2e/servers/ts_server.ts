// A protected MCP server built with the official TypeScript SDK that trusts Tessera.
//
// Tools `whoami` (tools:read, which every request needs) and `add_note` (tools:write). The SDK's
// mcpAuthMetadataRouter serves RFC 9728 protected resource metadata naming Tessera, and
// requireBearerAuth answers 401 with `resource_metadata` and asks a verifier about each token:
// `--verify jwks` checks the JWT locally with jose against Tessera's JWKS, `--verify introspect`
// asks Tessera's /introspect with this resource's credentials (env TESSERA_RS_CLIENT_ID/_SECRET).
//
//   node dist/servers/ts_server.js --issuer http://127.0.0.1:8080 \
//       --resource http://127.0.0.1:3003/mcp --verify jwks
import { parseArgs } from 'node:util';
import type { NextFunction, Request, Response } from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as z from 'zod/v4';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { getOAuthProtectedResourceMetadataUrl, mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { OAuthMetadataSchema } from '@modelcontextprotocol/sdk/shared/auth.js';

/** Verify Tessera's RFC 9068 access tokens locally against its JWKS. */
export function tesseraJwksVerifier(issuer: string, resource: string, jwksUri: string): OAuthTokenVerifier {
    const jwks = createRemoteJWKSet(new URL(jwksUri)); // caches keys, refetches on an unknown kid
    return {
        async verifyAccessToken(token: string): Promise<AuthInfo> {
            try {
                const { payload } = await jwtVerify(token, jwks, {
                    issuer, // exactly as Tessera publishes it: no trailing slash
                    audience: resource, // this server's canonical URI
                    typ: 'at+jwt',
                    algorithms: ['ES256'],
                    requiredClaims: ['exp', 'sub', 'client_id']
                });
                return {
                    token,
                    clientId: String(payload.client_id),
                    scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
                    expiresAt: payload.exp,
                    resource: new URL(String(payload.aud)),
                    extra: { sub: payload.sub }
                };
            } catch (e) {
                // Anything else than InvalidTokenError becomes a 500 in requireBearerAuth.
                throw new InvalidTokenError(`token rejected: ${(e as Error).message}`);
            }
        }
    };
}

/** Ask Tessera (RFC 7662) with this resource's credentials from `tessera resource add`. */
export function tesseraIntrospectionVerifier(
    endpoint: string,
    resource: string,
    clientId: string,
    clientSecret: string
): OAuthTokenVerifier {
    const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
    return {
        async verifyAccessToken(token: string): Promise<AuthInfo> {
            const res = await fetch(endpoint, {
                method: 'POST',
                headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
                body: new URLSearchParams({ token, token_type_hint: 'access_token' })
            });
            if (!res.ok) throw new ServerError(`introspection failed: HTTP ${res.status}`);
            const info = (await res.json()) as Record<string, unknown>;
            // Tessera answers active only for tokens whose aud is the calling resource; check anyway.
            if (info.active !== true || info.aud !== resource) throw new InvalidTokenError('token is not active here');
            return {
                token,
                clientId: String(info.client_id),
                scopes: String(info.scope ?? '').split(' ').filter(Boolean),
                expiresAt: Number(info.exp),
                resource: new URL(String(info.aud)),
                extra: { sub: info.sub }
            };
        }
    };
}

/** 403 insufficient_scope for a tools/call whose scope the token lacks; `scope` names what the
 *  token has plus what the tool needs, so clients that replace their scope keep what they had. */
export function toolScopes(needs: Record<string, string>, resourceMetadataUrl: string) {
    return (req: Request, res: Response, next: NextFunction) => {
        const granted = req.auth?.scopes ?? [];
        const messages: unknown[] = Array.isArray(req.body) ? req.body : [req.body];
        const missing = new Set<string>();
        for (const m of messages as { method?: string; params?: { name?: string } }[]) {
            const scope = m?.method === 'tools/call' ? needs[m.params?.name ?? ''] : undefined;
            if (scope && !granted.includes(scope)) missing.add(scope);
        }
        if (missing.size === 0) return next();
        const wanted = [...new Set([...granted, ...missing])].join(' ');
        const need = [...missing].join(' ');
        res.set(
            'WWW-Authenticate',
            `Bearer error="insufficient_scope", scope="${wanted}", resource_metadata="${resourceMetadataUrl}", ` +
                `error_description="this tool needs ${need}"`
        );
        res.status(403).json({ error: 'insufficient_scope', error_description: `needs ${need}` });
    };
}

function buildMcpServer(mode: string): McpServer {
    const server = new McpServer({ name: `tessera-e2e-ts-${mode}`, version: '1.0.0' });
    server.registerTool('whoami', { description: 'Who the bearer token says is calling (needs tools:read)' }, async extra => {
        const auth = extra.authInfo!;
        const me = {
            server: `typescript/${mode}`,
            sub: auth.extra?.sub,
            client_id: auth.clientId,
            scopes: auth.scopes,
            aud: auth.resource?.href,
            expires_in: (auth.expiresAt ?? 0) - Math.floor(Date.now() / 1000)
        };
        return { content: [{ type: 'text', text: JSON.stringify(me) }], structuredContent: me };
    });
    let notes = 0;
    server.registerTool(
        'add_note',
        { description: 'Store a note (needs tools:write)', inputSchema: { text: z.string() } },
        async ({ text }) => ({ content: [{ type: 'text', text: `stored note #${++notes} (${text.length} chars)` }] })
    );
    return server;
}

async function main() {
    const { values } = parseArgs({
        options: { issuer: { type: 'string' }, resource: { type: 'string' }, verify: { type: 'string' } }
    });
    const issuer = values.issuer!;
    const resource = values.resource!; // canonical URI string, e.g. http://127.0.0.1:3003/mcp
    const mode = values.verify === 'introspect' ? 'introspect' : 'jwks';
    const resourceUrl = new URL(resource);

    // Tessera's metadata: where its JWKS and introspection live; the metadata router republishes it.
    const res = await fetch(`${issuer}/.well-known/oauth-authorization-server`);
    const oauthMetadata = OAuthMetadataSchema.parse(await res.json());
    const verifier =
        mode === 'jwks'
            ? tesseraJwksVerifier(issuer, resource, String(oauthMetadata.jwks_uri))
            : tesseraIntrospectionVerifier(
                  oauthMetadata.introspection_endpoint!,
                  resource,
                  process.env.TESSERA_RS_CLIENT_ID!,
                  process.env.TESSERA_RS_CLIENT_SECRET!
              );
    const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(resourceUrl);

    const app = createMcpExpressApp({ host: '127.0.0.1' });
    app.use(mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: resourceUrl, scopesSupported: ['tools:read'] }));
    const auth = requireBearerAuth({ verifier, requiredScopes: ['tools:read'], resourceMetadataUrl, expectedResource: resourceUrl });
    app.post(resourceUrl.pathname, auth, toolScopes({ add_note: 'tools:write' }, resourceMetadataUrl), async (req, res) => {
        // Stateless: a server and transport per request.
        const server = buildMcpServer(mode);
        const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
        res.on('close', () => {
            void transport.close();
            void server.close();
        });
        await server.connect(transport);
        await transport.handleRequest(req, res, req.body);
    });
    app.all(resourceUrl.pathname, auth, (_req, res) => {
        res.status(405).set('Allow', 'POST').json({ error: 'method not allowed' });
    });
    app.listen(Number(resourceUrl.port), '127.0.0.1', () => console.log(`ts server (${mode}) on ${resource}`));
}

main().catch(e => {
    console.error(e);
    process.exit(1);
});
