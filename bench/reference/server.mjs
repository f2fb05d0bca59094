// The reference authorization server of Tessera's benchmark: oidc-provider configured as an MCP
// authorization server equivalent to Tessera (ES256 JWT access tokens bound to one resource via
// resource indicators, client credentials, rotating refresh tokens, introspection, revocation),
// keeping everything in memory.
//
// Environment: REF_PORT (listen port on 127.0.0.1), REF_CC_SECRET (the confidential client's
// secret). Everything else is fixed here and mirrored by bench/run's seeding of Tessera.

import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors, interactionPolicy } from 'oidc-provider';
// The upstream in-memory adapter, given an unbounded store: its default store is an LRU of 1000
// entries, which would evict the codes and refresh tokens minted before a workload runs.
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const PORT = Number(process.env.REF_PORT);
const CC_SECRET = process.env.REF_CC_SECRET;
if (!PORT || !CC_SECRET) {
  console.error('REF_PORT and REF_CC_SECRET are required');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;

// Mirrors of what bench/run registers in Tessera.
export const RESOURCE = 'https://mcp.example.com/mcp';
// oidc-provider refuses to introspect (or revoke) JWTs, so introspection uses tokens minted for
// a second resource whose access tokens are opaque.
export const OPAQUE_RESOURCE = 'https://mcp-opaque.example.com/mcp';
const SCOPES = 'tools:read tools:write';
const USER = 'alice';

/** Map with per-entry expiry and the get/set/delete surface MemoryAdapter expects. */
class Store {
  #map = new Map();

  constructor() {
    // Sweep expired entries now and then so a long run does not grow without bound.
    setInterval(() => {
      const now = Date.now();
      for (const [k, e] of this.#map) if (e.expiry !== undefined && e.expiry <= now) this.#map.delete(k);
    }, 30_000).unref();
  }

  get(key) {
    const e = this.#map.get(key);
    if (!e) return undefined;
    if (e.expiry !== undefined && e.expiry <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key, value, { maxAge } = {}) {
    const expiry = typeof maxAge === 'number' && Number.isFinite(maxAge) ? Date.now() + maxAge : undefined;
    this.#map.set(key, { value, expiry });
    return this;
  }

  delete(key) {
    return this.#map.delete(key);
  }
}
const store = new Store();

// One ES256 signing key, like Tessera's JWKS.
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'ES256', use: 'sig' };

// Remembered consents (user|client -> what was approved), like Tessera's consent table: a later
// authorization for the same client skips the consent step but still gets a grant of its own.
const consents = new Map();

// Tessera remembers a consent per user, client and resource, so later authorizations of an
// admin-registered client go straight back with a code. oidc-provider by default asks native
// clients for consent on every authorization; drop that check to match.
const policy = interactionPolicy.base();
policy.get('consent').checks.remove('native_client_prompt');

const configuration = {
  adapter: (model) => new MemoryAdapter(model, store),
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  clients: [
    {
      client_id: 'bench-cc',
      client_secret: CC_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'bench-app',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access'],
  routes: {
    authorization: '/authorize',
    token: '/token',
    jwks: '/jwks.json',
    introspection: '/introspect',
    revocation: '/revoke',
  },
  ttl: {
    AccessToken: 600,
    ClientCredentials: 600,
    AuthorizationCode: 60,
    RefreshToken: 30 * 24 * 3600,
    Grant: 90 * 24 * 3600,
    Interaction: 3600,
    Session: 12 * 3600,
  },
  // Tessera issues refresh tokens to every client registered for the grant type (no
  // offline_access needed) and rotates them on every use.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  // Codes and tokens belong to their grant, not to the browser session (as in Tessera); bound to
  // the session they would die when the next authorization gives the session a newer grant.
  expiresWithSession: async () => false,
  interactions: { policy, url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  loadExistingGrant: async (ctx) => {
    const { Grant } = ctx.oidc.provider;
    const fromConsent = ctx.oidc.result?.consent?.grantId;
    if (fromConsent) return Grant.find(fromConsent);
    const accountId = ctx.oidc.session.accountId;
    const clientId = ctx.oidc.client.clientId;
    const remembered = accountId && consents.get(`${accountId}|${clientId}`);
    if (!remembered) return undefined;
    // A grant per authorization, as Tessera does (one grant row per code): tokens of different
    // authorizations never share a grant, so revoking one does not revoke the others.
    const grant = new Grant({ accountId, clientId });
    for (const [resource, scope] of remembered) grant.addResourceScope(resource, scope);
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator === RESOURCE) {
          return {
            scope: SCOPES,
            audience: RESOURCE,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resourceIndicator === OPAQUE_RESOURCE) {
          return { scope: SCOPES, audience: OPAQUE_RESOURCE, accessTokenTTL: 600, accessTokenFormat: 'opaque' };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
};

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
// Client errors carry their reason only in error_detail: log the first few of each event so a
// benchmark error can be explained, without flooding the log under load.
let logged = 0;
for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'authorization.error']) {
  provider.on(event, (_ctx, err) => {
    if (logged++ < 50) console.error(event, err.error, err.error_description, err.error_detail ?? '');
  });
}

// The interaction step approves at once: the bench user is signed in (no password: the login
// page is not what is measured) and consents to what the client asked. Codes are still minted
// through the real /authorize endpoint and redirects.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: USER } };
    } else if (prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      const approved = [];
      for (const [resource, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(resource, scopes.join(' '));
        approved.push([resource, scopes.join(' ')]);
      }
      consents.set(`${session.accountId}|${params.client_id}`, approved);
      result = { consent: { grantId: await grant.save() } };
    } else {
      result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  } catch (err) {
    console.error('interaction failed', err);
    res.statusCode = 500;
    res.end('interaction failed');
  }
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) return interaction(req, res);
  return callback(req, res);
});
// Keep-alive connections from the load generator stay open between workloads.
server.keepAliveTimeout = 120_000;
server.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider ${ISSUER} ready`));
// Nothing to flush: everything lives in memory.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
