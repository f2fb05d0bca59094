// Journeys of the official MCP TypeScript SDK client (@modelcontextprotocol/sdk: Client,
// StreamableHTTPClientTransport, auth(); unmodified) against MCP servers that trust Tessera, and
// against MCP servers with no auth code behind `tessera gateway`.
// Run by e2e/run with $E2E_CONFIG; prints what each journey does; exits non-zero on a failure.
//
//   E2E_CONFIG=... node dist/clients/ts_journeys.js [JOURNEY ...]
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { auth, UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { Browser } from './browser.js';
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
    prmUrl,
    refusedAfterRevocation,
    revoke,
    runJourneys,
    say,
    short,
    tesseraCli,
    waitForExpiry as waitForTokenExpiry,
    type GatewayClient,
    type Journey
} from './kit.js';

/** The application's side of the SDK's OAuth: storage, the browser, the callback. */
class JourneyProvider implements OAuthClientProvider {
    client?: OAuthClientInformationMixed;
    tokenSet?: OAuthTokens;
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
    clientInformation() {
        return this.client;
    }
    saveClientInformation(info: OAuthClientInformationMixed) {
        this.client = info;
    }
    tokens() {
        return this.tokenSet;
    }
    saveTokens(tokens: OAuthTokens) {
        this.tokenSet = tokens;
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

    /** The code from the redirect back, after checking state and RFC 9207 iss (the SDK leaves both to us). */
    takeCode(): string {
        const cb = this.callback;
        this.callback = undefined;
        if (!cb) throw new Failed('no authorization response');
        const p = cb.searchParams;
        check(!p.get('error'), `authorization failed: ${p}`);
        check(p.get('state') === this.pendingState, 'state round-trips');
        check(p.get('iss') === ISSUER, `iss ${p.get('iss')} is the issuer byte for byte`);
        return p.get('code')!;
    }
}

class TsClient {
    url: string;
    trace = new Trace();
    provider: JourneyProvider;
    client!: Client;
    transport!: StreamableHTTPClientTransport;

    constructor(
        public server: string,
        name: string,
        browser: Browser,
        private opts: { authMethod?: string; clientMetadataUrl?: string; seedClient?: OAuthClientInformationMixed; origin?: string } = {}
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
     *  the application completes with transport.finishAuth(code) and connects again. */
    async connect() {
        for (let attempt = 0; ; attempt++) {
            this.transport = new StreamableHTTPClientTransport(new URL(this.url), {
                authProvider: this.provider,
                fetch: this.trace.fetch,
                requestInit: this.opts.origin ? { headers: { origin: this.opts.origin } } : undefined
            });
            this.client = new Client({ name: 'tessera-e2e-ts', version: '1.0.0' });
            try {
                await bounded('connect', this.client.connect(this.transport));
                return;
            } catch (e) {
                if (!(e instanceof UnauthorizedError) || attempt > 0) throw e;
                this.trace.note('SDK throws UnauthorizedError; app: transport.finishAuth(code), connect again');
                await bounded('finishAuth', this.transport.finishAuth(this.provider.takeCode()));
            }
        }
    }

    /** An operation that may need a new authorization (a 401 the SDK could not fix by refreshing). */
    async op<T>(what: string, f: () => Promise<T>): Promise<T> {
        try {
            return await bounded(what, f());
        } catch (e) {
            if (!(e instanceof UnauthorizedError)) throw e;
            this.trace.note('SDK throws UnauthorizedError; app: transport.finishAuth(code), retry');
            await bounded('finishAuth', this.transport.finishAuth(this.provider.takeCode()));
            return await bounded(what, f());
        }
    }

    async call(tool: string, args: Record<string, unknown> = {}, onprogress?: (progress: number) => void): Promise<any> {
        const options = onprogress ? { onprogress: (p: { progress: number }) => onprogress(p.progress) } : undefined;
        const r = await this.op(tool, () => this.client.callTool({ name: tool, arguments: args }, undefined, options));
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

async function waitForExpiry(c: TsClient) {
    await waitForTokenExpiry(c.provider.tokenSet!.access_token);
}

/** Call a tool that needs a scope the token lacks. The SDK sees 403 insufficient_scope; if it
 *  cannot step up by itself, the application re-authorizes with auth() for the challenged scope. */
async function stepUp(c: TsClient, tool: string, args: Record<string, unknown>): Promise<{ result: any; bySdk: boolean }> {
    const mark = c.trace.events.length;
    try {
        return { result: await c.call(tool, args), bySdk: true };
    } catch (e) {
        if (!(e instanceof StreamableHTTPError && e.code === 403)) throw e;
        c.trace.flush();
        // @modelcontextprotocol/sdk 1.32.2: on 403 insufficient_scope auth() refreshes (a refresh
        // cannot widen the scope), gets the same 403, and gives up ("Server returned 403 after
        // trying upscoping"; typescript-sdk issue #2255). Re-authorize for the challenged scope.
        const challenge = c.trace.requests(mark).find(r => r.status === 403)!.www!;
        const scope = /scope="([^"]+)"/.exec(challenge)![1];
        say(`      KNOWN SDK LIMITATION (1.32.2): ${e.message.slice(0, 80)}; app drops the tokens and calls auth({scope: "${scope}"})`);
        c.provider.tokenSet = undefined;
        const common = { serverUrl: c.url, scope, resourceMetadataUrl: prmUrl(c.url), fetchFn: c.trace.fetch };
        const first = await bounded('auth', auth(c.provider, common));
        if (first === 'REDIRECT') await bounded('auth', auth(c.provider, { ...common, authorizationCode: c.provider.takeCode() }));
        return { result: await c.call(tool, args), bySdk: false };
    }
}

async function fullJourney(c: TsClient, opts: { registered: boolean }) {
    say('    connect: the first request has no token');
    await c.connect();
    const t = c.trace;
    const reqs = t.requests();
    t.flush();
    check(reqs[0].status === 401 && reqs[0].www!.includes('resource_metadata='), `first request: 401 with resource_metadata (${reqs[0].status})`);
    check(reqs.some(r => r.path!.startsWith('/.well-known/oauth-protected-resource') && r.status === 200), 'protected resource metadata fetched');
    check(reqs.some(r => r.path === '/.well-known/oauth-authorization-server' && r.status === 200), 'authorization server metadata fetched');
    const registrations = reqs.filter(r => r.path === '/register');
    if (opts.registered) check(registrations.length === 1 && registrations[0].status === 201, 'one dynamic registration (201)');
    else check(registrations.length === 0, 'no registration');
    check(c.provider.authorizations === 1, `one authorization (${c.provider.authorizations})`);
    check(c.provider.lastAuthorize!.searchParams.get('resource') === c.url, 'resource indicator is the canonical URI');
    check(t.tokenGrants().at(-1) === 'authorization_code', 'code exchanged');
    const clientId = c.provider.client!.client_id;
    say(`    client_id ${short(clientId)}; granted scope '${c.provider.tokenSet!.scope}'`);

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
    await waitForExpiry(c);
    let mark = t.events.length;
    me = await c.call('whoami');
    t.flush();
    check(t.tokenGrants(mark).includes('refresh_token'), `SDK refreshed (${t.tokenGrants(mark)})`);
    check(c.provider.authorizations === 1, 'no new authorization for a refresh');
    check(c.provider.tokenSet!.access_token !== firstAccess, 'new access token');
    check(![undefined, firstRefresh].includes(c.provider.tokenSet!.refresh_token), 'refresh token rotated');
    say(`    refreshed after expiry (401 -> refresh -> retry): whoami ok, refresh token rotated`);

    say('    add_note needs tools:write');
    mark = t.events.length;
    const { result, bySdk } = await stepUp(c, 'add_note', { text: 'hello from the TypeScript SDK' });
    t.flush();
    const denied = t.requests(mark).find(r => r.status === 403);
    check(denied && denied.www!.includes('error="insufficient_scope"'), '403 insufficient_scope seen');
    const authorizations: number = c.provider.authorizations; // re-read: the call changed it
    check(authorizations === 2, `re-authorized once for the step-up (${authorizations - 1})`);
    const asked = (c.provider.lastAuthorize!.searchParams.get('scope') ?? '').split(' ');
    check(asked.includes('tools:read') && asked.includes('tools:write'), 'step-up asks read + write');
    me = await c.call('whoami');
    check(me.scopes.includes('tools:read') && me.scopes.includes('tools:write'), `stepped-up scopes ${me.scopes}`);
    say(`    stepped up ${bySdk ? 'by the SDK' : 'with the workaround'}: ${JSON.stringify(result)}; scopes now ${JSON.stringify(me.scopes)}`);
}

/** The gateway journey's view of a TsClient (kit.ts: gatewayJourney). */
function viaGateway(c: TsClient, server: string): GatewayClient {
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
        stepUpCall: (tool, args) => gatewayStepUp(c, tool, args),
        withOrigin: origin => {
            const again = new TsClient(server, 'e2e ts via gateway', newBrowser(), { origin, seedClient: c.provider.client });
            again.provider.tokenSet = c.provider.tokenSet;
            return viaGateway(again, server);
        },
        close: () => c.close()
    };
}

/** Step-up through the gateway. SDK 1.32.2 refreshes on 403 insufficient_scope (a refresh cannot
 *  widen a grant), gets the same 403 and throws (issue #2255), as in stepUp(). The application
 *  re-authorizes, asking for what it holds plus what the challenge names: the gateway's challenge
 *  names only the scopes the call needs (RFC 6750 §3.1; SEP-2350 leaves the union to the client),
 *  and 1.32.2, which replaces its scope with the challenged one, would lose tools:read when it
 *  steps up to tools:write. */
async function gatewayStepUp(c: TsClient, tool: string, args: Record<string, unknown>): Promise<{ result: any; how: string }> {
    const mark = c.trace.events.length;
    try {
        return { result: await c.call(tool, args), how: 'by the SDK' };
    } catch (e) {
        if (!(e instanceof StreamableHTTPError && e.code === 403)) throw e;
        c.trace.flush();
        const challenge = c.trace.requests(mark).find(r => r.status === 403)!.www!;
        const challenged = /scope="([^"]+)"/.exec(challenge)![1].split(' ');
        const granted = (c.provider.tokenSet?.scope ?? '').split(' ').filter(Boolean);
        const scope = [...new Set([...granted, ...challenged])].join(' ');
        check(c.trace.tokenGrants(mark).includes('refresh_token'), 'SDK 1.32.2 tried a refresh first (issue #2255)');
        say(`      KNOWN SDK LIMITATION (1.32.2): refresh, same 403, "${e.message}" (issue #2255)`);
        say(`      app: challenge scope "${challenged.join(' ')}", held "${granted.join(' ')}"; drops the tokens, auth({scope: "${scope}"})`);
        c.provider.tokenSet = undefined;
        const common = { serverUrl: c.url, scope, resourceMetadataUrl: prmUrl(c.url), fetchFn: c.trace.fetch };
        const first = await bounded('auth', auth(c.provider, common));
        if (first === 'REDIRECT') await bounded('auth', auth(c.provider, { ...common, authorizationCode: c.provider.takeCode() }));
        return { result: await c.call(tool, args), how: 'by the application (held + challenged scopes; SDK 1.32.2 cannot, issue #2255)' };
    }
}

const JOURNEYS: Record<string, Journey> = {
    'ts-dcr@py-jwks': {
        doc: 'TypeScript SDK client, dynamic registration (public client), Python server verifying via JWKS.',
        run: async () => {
            const c = new TsClient('py-jwks', 'e2e ts public', newBrowser());
            try {
                await fullJourney(c, { registered: true });
            } finally {
                await c.close();
            }
        }
    },
    'ts-dcr@py-introspect': {
        doc: 'TypeScript SDK client registering as a confidential client (client_secret_post), Python server introspecting.',
        run: async () => {
            const c = new TsClient('py-introspect', 'e2e ts confidential', newBrowser(), { authMethod: 'client_secret_post' });
            try {
                await fullJourney(c, { registered: true });
                check(c.provider.client!.client_secret, 'registered confidential with a secret');
            } finally {
                await c.close();
            }
        }
    },
    'ts-dcr@ts-introspect': {
        doc: 'TypeScript SDK client against the TypeScript SDK server (requireBearerAuth, introspection).',
        run: async () => {
            const c = new TsClient('ts-introspect', 'e2e ts vs ts server', newBrowser());
            try {
                await fullJourney(c, { registered: true });
            } finally {
                await c.close();
            }
        }
    },
    'ts-cimd@py-introspect': {
        doc: 'A client identified by a client ID metadata document (no registration).',
        run: async () => {
            const docUrl = `${CFG.cimd_base}/ts-client.json`;
            // 1. The SDK's own CIMD support (provider.clientMetadataUrl, https only): with Tessera
            //    advertising client_id_metadata_document_supported it skips registration and sends
            //    the URL as client_id. A loopback test cannot serve an https document Tessera
            //    trusts, so this probe stops at the browser.
            const httpsUrl = docUrl.replace('http://', 'https://');
            const probe = new TsClient('py-introspect', 'e2e ts cimd', newBrowser(), { clientMetadataUrl: docUrl });
            try {
                await probe.connect();
                throw new Failed('SDK accepted an http clientMetadataUrl');
            } catch (e) {
                check(!(e instanceof Failed), (e as Error).message);
                say(`    SDK refuses an http clientMetadataUrl: ${(e as Error).message.slice(0, 80)}...`);
            }
            const probe2 = new TsClient('py-introspect', 'e2e ts cimd', newBrowser(), { clientMetadataUrl: httpsUrl });
            probe2.provider.abortInRedirect = 'stop before the browser (probe)';
            await probe2.connect().catch(() => {});
            probe2.trace.flush();
            check(probe2.provider.lastAuthorize?.searchParams.get('client_id') === httpsUrl, 'SDK sent the document URL as client_id');
            check(!probe2.trace.requests().some(r => r.path === '/register'), 'SDK did not register');
            say('    SDK chose CIMD (client_id = document URL, no /register)');

            // 2. The whole journey with the loopback http document Tessera fetches under
            //    TESSERA_CIMD_ALLOW_LOOPBACK: the application hands the URL over as its client_id.
            const c = new TsClient('py-introspect', 'e2e ts cimd', newBrowser(), { seedClient: { client_id: docUrl } });
            try {
                await fullJourney(c, { registered: false });
                check(c.claims().client_id === docUrl, "access token's client_id is the document URL");
            } finally {
                await c.close();
            }
        }
    },
    'neg-revoked@ts': {
        doc: 'A revoked grant makes the next call fail (introspection) and the TypeScript SDK re-authorize.',
        run: async () => {
            const c = new TsClient('py-introspect', 'e2e ts revoke', newBrowser());
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
    'neg-deleted-client@ts': {
        doc: 'A deleted dynamic client gets invalid_client and the TypeScript SDK registers again by itself.',
        run: async () => {
            const c = new TsClient('py-jwks', 'e2e ts deleted', newBrowser());
            try {
                await c.connect();
                await c.call('whoami');
                c.trace.flush();
                const oldId = c.provider.client!.client_id;
                tesseraCli('client', 'remove', oldId);
                say(`    tessera client remove ${oldId}`);
                await waitForExpiry(c);
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
    JOURNEYS[`ts-gw@${server}`] = {
        doc:
            `TypeScript SDK client through \`tessera gateway\` to the ${server === 'plain-py' ? 'Python' : 'TypeScript'} SDK server with no auth code: ` +
            "discovery from the gateway's 401, registration, login, tools/list filtered, step-up twice (driven by the application), a policy-denied " +
            "tool, the per-tool rate limit (429), 1,000 progress notifications, another resource's token, a foreign Origin, the tool.call audit.",
        run: () => gatewayJourney(server, viaGateway(new TsClient(server, `e2e ts via gateway ${server}`, newBrowser()), server))
    };
}

void runJourneys('typescript journeys', `TypeScript SDK @modelcontextprotocol/sdk ${CFG.versions.ts_sdk}`, JOURNEYS);
