// Journeys of the official MCP TypeScript SDK v2 client (@modelcontextprotocol/client: Client,
// StreamableHTTPClientTransport, an OAuthClientProvider; unmodified) against MCP servers that
// trust Tessera, and against MCP servers with no auth code behind `tessera gateway`. The same
// journeys as ts_journeys.ts (SDK 1.x) where v2 behaves differently:
// finishAuth takes the whole callback query and checks RFC 9207 `iss` itself, the provider keeps
// the discovery state (SEP-2352), stored tokens and clients carry the issuer, and the transport
// steps up on 403 insufficient_scope by itself (no refresh first).
// Run by e2e/run with $E2E_CONFIG; prints what each journey does; exits non-zero on a failure.
//
//   E2E_CONFIG=... node dist/clients/ts2_journeys.js [JOURNEY ...]
import { randomUUID } from 'node:crypto';
import {
    Client,
    StreamableHTTPClientTransport,
    UnauthorizedError,
    type OAuthClientInformationContext,
    type OAuthClientMetadata,
    type OAuthClientProvider,
    type OAuthDiscoveryState,
    type StoredOAuthClientInformation,
    type StoredOAuthTokens
} from '@modelcontextprotocol/client';
import type { Browser } from './browser.js';
import {
    CFG,
    ISSUER,
    Failed,
    Trace,
    bounded,
    check,
    gatewayJourney,
    jwtClaims,
    newBrowser,
    refusedAfterRevocation,
    revoke,
    runJourneys,
    say,
    short,
    tesseraCli,
    waitForExpiry,
    type GatewayClient,
    type Journey
} from './kit.js';

/** The application's side of the SDK's OAuth: storage, the browser, the callback. */
class JourneyProvider implements OAuthClientProvider {
    client?: StoredOAuthClientInformation;
    tokenSet?: StoredOAuthTokens;
    discovery?: OAuthDiscoveryState;
    authorizations = 0;
    lastAuthorize?: URL;
    abortInRedirect?: string;
    clientMetadataUrl?: string;
    private verifier?: string;
    private pendingState?: string;
    private callback?: URL;

    constructor(
        private browser: Browser,
        private trace: Trace,
        private metadata: OAuthClientMetadata,
        clientMetadataUrl?: string
    ) {
        this.clientMetadataUrl = clientMetadataUrl;
        browser.log = line => trace.note(line);
    }

    get redirectUrl() {
        return CFG.callback as string;
    }
    get clientMetadata() {
        return this.metadata;
    }
    state() {
        this.pendingState = randomUUID();
        return this.pendingState;
    }
    clientInformation(_ctx?: OAuthClientInformationContext) {
        return this.client; // one authorization server: no need to key by ctx.issuer
    }
    saveClientInformation(info: StoredOAuthClientInformation) {
        this.client = info;
    }
    tokens() {
        return this.tokenSet;
    }
    saveTokens(tokens: StoredOAuthTokens) {
        this.tokenSet = tokens;
    }
    saveDiscoveryState(state: OAuthDiscoveryState) {
        this.discovery = state;
    }
    discoveryState() {
        return this.discovery;
    }
    saveCodeVerifier(v: string) {
        this.verifier = v;
    }
    codeVerifier() {
        if (!this.verifier) throw new Error('no code verifier');
        return this.verifier;
    }
    invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
        this.trace.note(`invalidateCredentials('${scope}')`);
        if (scope === 'all' || scope === 'client') this.client = undefined;
        if (scope === 'all' || scope === 'tokens') this.tokenSet = undefined;
        if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
        if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
    }
    async redirectToAuthorization(url: URL) {
        this.authorizations++;
        this.lastAuthorize = url;
        const q = url.searchParams;
        this.trace.note(
            `SDK opens the browser: /authorize client_id=${short(q.get('client_id'))} scope=${JSON.stringify(q.get('scope'))} ` +
                `resource=${q.get('resource')} prompt=${q.get('prompt')}`
        );
        if (this.abortInRedirect) throw new Failed(this.abortInRedirect);
        this.callback = new URL(await this.browser.authorize(url.href));
    }

    /** The query of the redirect back, after checking state (v2 still leaves state to the
     *  application; it checks `iss` itself in finishAuth). */
    takeCallback(): URLSearchParams {
        const cb = this.callback;
        this.callback = undefined;
        if (!cb) throw new Failed('no authorization response');
        const p = cb.searchParams;
        check(!p.get('error'), `authorization failed: ${p}`);
        check(p.get('state') === this.pendingState, 'state round-trips');
        check(p.get('iss') === ISSUER, `iss ${p.get('iss')} is the issuer byte for byte`);
        return p;
    }
}

class Ts2Client {
    url: string;
    trace = new Trace();
    provider: JourneyProvider;
    client!: Client;
    transport!: StreamableHTTPClientTransport;

    constructor(
        public server: string,
        name: string,
        browser: Browser,
        private opts: { authMethod?: string; clientMetadataUrl?: string; seedClient?: StoredOAuthClientInformation; origin?: string } = {}
    ) {
        // An MCP server that trusts Tessera itself, or a gateway in front of one with no auth code.
        this.url = CFG.servers[server] ?? CFG.gateways[server];
        this.provider = new JourneyProvider(
            browser,
            this.trace,
            {
                client_name: name,
                redirect_uris: [CFG.callback],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: opts.authMethod ?? 'none'
            },
            opts.clientMetadataUrl
        );
        this.provider.client = opts.seedClient;
    }

    /** Connect; the SDK throws UnauthorizedError after sending the person to the browser, and
     *  the application completes with transport.finishAuth(callback query) and connects again
     *  on a fresh transport (a started transport cannot be restarted). */
    async connect() {
        for (let attempt = 0; ; attempt++) {
            this.transport = new StreamableHTTPClientTransport(new URL(this.url), {
                authProvider: this.provider,
                fetch: this.trace.fetch,
                requestInit: this.opts.origin ? { headers: { origin: this.opts.origin } } : undefined
            });
            this.client = new Client({ name: 'tessera-e2e-ts2', version: '1.0.0' });
            try {
                await bounded('connect', this.client.connect(this.transport));
                return;
            } catch (e) {
                if (!(e instanceof UnauthorizedError) || attempt > 0) throw e;
                this.trace.note('SDK throws UnauthorizedError; app: transport.finishAuth(callback query), connect again');
                await bounded('finishAuth', this.transport.finishAuth(this.provider.takeCallback()));
            }
        }
    }

    /** An operation that may need a new authorization (a 401 the SDK could not fix by
     *  refreshing, or a 403 insufficient_scope the SDK stepped up for). */
    async op<T>(what: string, f: () => Promise<T>): Promise<T> {
        try {
            return await bounded(what, f());
        } catch (e) {
            if (!(e instanceof UnauthorizedError)) throw e;
            this.trace.note('SDK throws UnauthorizedError; app: transport.finishAuth(callback query), retry');
            await bounded('finishAuth', this.transport.finishAuth(this.provider.takeCallback()));
            return await bounded(what, f());
        }
    }

    async call(tool: string, args: Record<string, unknown> = {}, onprogress?: (progress: number) => void): Promise<any> {
        const options = onprogress ? { onprogress: (p: { progress: number }) => onprogress(p.progress) } : undefined;
        const r = await this.op(tool, () => this.client.callTool({ name: tool, arguments: args }, options));
        check(!r.isError, `${tool} failed: ${JSON.stringify(r.content)}`);
        if (r.structuredContent) return r.structuredContent;
        const text = (r.content as { type: string; text: string }[])[0].text;
        try {
            return JSON.parse(text);
        } catch {
            return text;
        }
    }

    async listTools(): Promise<string[]> {
        return (await this.op('tools/list', () => this.client.listTools())).tools.map(t => t.name);
    }

    async close() {
        await this.client.close().catch(() => {});
    }

    claims(): Record<string, any> {
        return jwtClaims(this.provider.tokenSet!.access_token);
    }
}

async function fullJourney(c: Ts2Client, opts: { registered: boolean; authMethod?: string }) {
    say('    connect: the first request has no token');
    await c.connect();
    const t = c.trace;
    const reqs = t.requests();
    t.flush();
    check(reqs[0].status === 401 && reqs[0].www!.includes('resource_metadata='), `first request: 401 with resource_metadata (${reqs[0].status})`);
    check(reqs.some(r => r.path!.startsWith('/.well-known/oauth-protected-resource') && r.status === 200), 'protected resource metadata fetched');
    check(reqs.some(r => r.path === '/.well-known/oauth-authorization-server' && r.status === 200), 'authorization server metadata fetched');
    const registrations = reqs.filter(r => r.path === '/register');
    if (opts.registered) {
        check(registrations.length === 1 && registrations[0].status === 201, 'one dynamic registration (201)');
        say(`    registered with ${registrations[0].body}`);
    } else check(registrations.length === 0, 'no registration');
    check(c.provider.authorizations === 1, `one authorization (${c.provider.authorizations})`);
    const q = c.provider.lastAuthorize!.searchParams;
    check(q.get('resource') === c.url, 'resource indicator is the canonical URI');
    check(q.get('code_challenge_method') === 'S256', 'PKCE S256');
    check(t.tokenGrants().at(-1) === 'authorization_code', 'code exchanged');
    const exchange = t.tokenRequests().at(-1)!;
    check(exchange.form!.get('resource') === c.url, 'resource on the code exchange');
    if (opts.authMethod) check(exchange.auth === opts.authMethod, `token endpoint auth ${exchange.auth}, expected ${opts.authMethod}`);
    check(c.provider.tokenSet!.issuer === ISSUER, `stored tokens carry the issuer (${c.provider.tokenSet!.issuer})`);
    check(c.provider.discovery?.authorizationServerMetadata?.issuer === ISSUER, 'discovery state kept with the issuer');
    const clientId = c.provider.client!.client_id;
    say(
        `    client_id ${short(clientId)}; auth ${exchange.auth}; asked scope '${q.get('scope')}' prompt=${q.get('prompt')}; granted '${c.provider.tokenSet!.scope}'`
    );

    const tools = await c.listTools();
    say(`    tools/list: ${JSON.stringify(tools)}`);
    check(tools.includes('whoami') && tools.includes('add_note'), 'both tools listed');
    let me = await c.call('whoami');
    say(`    whoami: ${JSON.stringify(me)}`);
    check(me.aud === c.url && me.client_id === clientId, 'token bound to this server and client');
    check(!me.scopes.includes('tools:write'), 'no tools:write yet');
    t.flush();

    const firstAccess = c.provider.tokenSet!.access_token;
    const firstRefresh = c.provider.tokenSet!.refresh_token;
    check(firstRefresh, 'a refresh token was issued');
    await waitForExpiry(firstAccess);
    let mark = t.events.length;
    me = await c.call('whoami');
    t.flush();
    check(t.tokenGrants(mark).includes('refresh_token'), `SDK refreshed (${t.tokenGrants(mark)})`);
    const refresh = t.tokenRequests(mark).find(r => r.kind === 'refresh_token')!;
    check(refresh.form!.get('resource') === c.url, 'resource on the refresh');
    check(c.provider.authorizations === 1, 'no new authorization for a refresh');
    check(c.provider.tokenSet!.access_token !== firstAccess, 'new access token');
    check(![undefined, firstRefresh].includes(c.provider.tokenSet!.refresh_token), 'refresh token rotated');
    say(`    refreshed after expiry (401 -> refresh -> retry): whoami ok, refresh token rotated`);

    say('    add_note needs tools:write: the v2 transport steps up by itself');
    mark = t.events.length;
    const result = await c.call('add_note', { text: 'hello from the TypeScript SDK v2' });
    t.flush();
    const stepped = t.requests(mark);
    const denied = stepped.find(r => r.status === 403);
    check(denied && denied.www!.includes('error="insufficient_scope"'), '403 insufficient_scope seen');
    check(!t.tokenGrants(mark).includes('refresh_token'), 'no refresh attempted for the step-up (a refresh cannot widen a grant)');
    const authorizations: number = c.provider.authorizations; // re-read: the call changed it
    check(authorizations === 2, `re-authorized once for the step-up (${authorizations - 1})`);
    const asked = (c.provider.lastAuthorize!.searchParams.get('scope') ?? '').split(' ');
    check(asked.includes('tools:read') && asked.includes('tools:write'), `step-up asks read + write (${asked})`);
    me = await c.call('whoami');
    check(me.scopes.includes('tools:read') && me.scopes.includes('tools:write'), `stepped-up scopes ${me.scopes}`);
    say(`    stepped up by the SDK: ${JSON.stringify(result)}; scopes now ${JSON.stringify(me.scopes)}`);
}

/** The gateway journey's view of a Ts2Client (kit.ts: gatewayJourney); v2 steps up by itself. */
function viaGateway(c: Ts2Client, server: string): GatewayClient {
    return {
        url: c.url,
        trace: c.trace,
        authorizations: () => c.provider.authorizations,
        lastAuthorize: () => c.provider.lastAuthorize,
        clientId: () => c.provider.client!.client_id,
        grantedScope: () => c.provider.tokenSet?.scope ?? '',
        accessToken: () => c.provider.tokenSet!.access_token,
        connect: () => c.connect(),
        listTools: () => c.listTools(),
        call: (tool, args, onprogress) => c.call(tool, args, onprogress),
        stepUpCall: async (tool, args) => {
            const mark = c.trace.events.length;
            const result = await c.call(tool, args);
            check(!c.trace.tokenGrants(mark).includes('refresh_token'), 'no refresh attempted for the step-up');
            return { result, how: 'by the SDK (union of requested, granted and challenged scopes; no refresh first)' };
        },
        withOrigin: origin => {
            const again = new Ts2Client(server, 'e2e ts2 via gateway', newBrowser(), { origin, seedClient: c.provider.client });
            again.provider.tokenSet = c.provider.tokenSet;
            again.provider.discovery = c.provider.discovery;
            return viaGateway(again, server);
        },
        close: () => c.close()
    };
}

const JOURNEYS: Record<string, Journey> = {
    'ts2-dcr@ts-jwks': {
        doc: 'TypeScript SDK v2 client, dynamic registration (public client), TypeScript server verifying via JWKS.',
        run: async () => {
            const c = new Ts2Client('ts-jwks', 'e2e ts2 public', newBrowser());
            try {
                await fullJourney(c, { registered: true, authMethod: 'none' });
            } finally {
                await c.close();
            }
        }
    },
    'ts2-dcr@py-introspect': {
        doc: 'TypeScript SDK v2 client registering as a confidential client (client_secret_basic), Python server introspecting.',
        run: async () => {
            const c = new Ts2Client('py-introspect', 'e2e ts2 confidential', newBrowser(), { authMethod: 'client_secret_basic' });
            try {
                await fullJourney(c, { registered: true, authMethod: 'client_secret_basic' });
                check(c.provider.client!.client_secret, 'registered confidential with a secret');
            } finally {
                await c.close();
            }
        }
    },
    'ts2-cimd@ts-introspect': {
        doc: 'A TypeScript SDK v2 client identified by a client ID metadata document (no registration).',
        run: async () => {
            const docUrl = `${CFG.cimd_base}/ts2-client.json`;
            // 1. The SDK's own CIMD support (provider.clientMetadataUrl, https only): with Tessera
            //    advertising client_id_metadata_document_supported it skips registration and sends
            //    the URL as client_id. Loopback cannot serve an https document Tessera trusts, so
            //    this probe stops at the browser.
            const probe = new Ts2Client('ts-introspect', 'e2e ts2 cimd', newBrowser(), { clientMetadataUrl: docUrl });
            try {
                await probe.connect();
                throw new Failed('SDK accepted an http clientMetadataUrl');
            } catch (e) {
                check(!(e instanceof Failed), (e as Error).message);
                say(`    SDK refuses an http clientMetadataUrl: ${(e as Error).message.slice(0, 90)}...`);
            }
            const httpsUrl = docUrl.replace('http://', 'https://');
            const probe2 = new Ts2Client('ts-introspect', 'e2e ts2 cimd', newBrowser(), { clientMetadataUrl: httpsUrl });
            probe2.provider.abortInRedirect = 'stop before the browser (probe)';
            await probe2.connect().catch(() => {});
            probe2.trace.flush();
            check(probe2.provider.lastAuthorize?.searchParams.get('client_id') === httpsUrl, 'SDK sent the document URL as client_id');
            check(!probe2.trace.requests().some(r => r.path === '/register'), 'SDK did not register');
            say('    SDK chose CIMD (client_id = document URL, no /register)');

            // 2. The whole journey with the loopback http document Tessera fetches under
            //    TESSERA_CIMD_ALLOW_LOOPBACK: the application hands the URL over as its stored
            //    client_id, stamped with the issuer as v2 stores clients (SEP-2352).
            const c = new Ts2Client('ts-introspect', 'e2e ts2 cimd', newBrowser(), { seedClient: { client_id: docUrl, issuer: ISSUER } });
            try {
                await fullJourney(c, { registered: false, authMethod: 'none' });
                check(c.claims().client_id === docUrl, "access token's client_id is the document URL");
            } finally {
                await c.close();
            }
        }
    },
    'neg-revoked@ts2': {
        doc: 'A revoked grant makes the next call fail (introspection) and the TypeScript SDK v2 re-authorize.',
        run: async () => {
            const c = new Ts2Client('ts-introspect', 'e2e ts2 revoke', newBrowser());
            try {
                await c.connect();
                await c.call('whoami');
                c.trace.flush();
                const old = c.provider.tokenSet!;
                await revoke(old.refresh_token!, 'refresh_token', c.provider.client!.client_id);
                say('    revoked the grant with its refresh token at /revoke');
                await refusedAfterRevocation(c.url, old.access_token);
                const mark = c.trace.events.length;
                await c.call('whoami');
                c.trace.flush();
                const reqs = c.trace.requests(mark);
                check(reqs.some(r => r.status === 401), 'the call got 401');
                check(reqs.some(r => r.kind === 'refresh_token' && r.status === 400 && r.error === 'invalid_grant'), 'refresh refused: invalid_grant');
                check(c.provider.authorizations === 2, 'SDK sent the person back to authorize');
                check(c.provider.tokenSet!.access_token !== old.access_token, 'new tokens');
                say('    401 -> refresh invalid_grant -> SDK drops the tokens -> re-authorized; whoami ok');
            } finally {
                await c.close();
            }
        }
    },
    'neg-deleted-client@ts2': {
        doc: 'A deleted dynamic client gets invalid_client and the TypeScript SDK v2 registers again by itself.',
        run: async () => {
            const c = new Ts2Client('ts-jwks', 'e2e ts2 deleted', newBrowser());
            try {
                await c.connect();
                await c.call('whoami');
                c.trace.flush();
                const oldId = c.provider.client!.client_id;
                tesseraCli('client', 'remove', oldId);
                say(`    tessera client remove ${oldId}`);
                await waitForExpiry(c.provider.tokenSet!.access_token);
                const mark = c.trace.events.length;
                const me = await c.call('whoami');
                c.trace.flush();
                const reqs = c.trace.requests(mark);
                check(reqs.some(r => r.kind === 'refresh_token' && r.status === 401 && r.error === 'invalid_client'), 'refresh: 401 invalid_client');
                check(reqs.some(r => r.path === '/register' && r.status === 201), 'registered again');
                const newId = c.provider.client!.client_id;
                check(newId !== oldId && me.client_id === newId, 'calls now come from the new client');
                say(`    invalid_client -> SDK dropped everything and registered again as ${newId}; whoami ok`);
            } finally {
                await c.close();
            }
        }
    }
};

for (const server of ['plain-py', 'plain-ts']) {
    JOURNEYS[`ts2-gw@${server}`] = {
        doc:
            `TypeScript SDK v2 client through \`tessera gateway\` to the ${server === 'plain-py' ? 'Python' : 'TypeScript'} SDK server with no auth code: ` +
            "discovery from the gateway's 401, registration, login, tools/list filtered, step-up twice by the SDK, a policy-denied tool, " +
            "the per-tool rate limit (429), 1,000 progress notifications, another resource's token, a foreign Origin, the tool.call audit.",
        run: () => gatewayJourney(server, viaGateway(new Ts2Client(server, `e2e ts2 via gateway ${server}`, newBrowser()), server))
    };
}

void runJourneys('typescript v2 journeys', `TypeScript SDK v2 @modelcontextprotocol/client ${CFG.versions.ts_client}`, JOURNEYS);
