// Journeys of the official MCP TypeScript SDK client (@modelcontextprotocol/sdk: Client,
// StreamableHTTPClientTransport, auth(); unmodified) against MCP servers that trust Tessera.
// Run by e2e/run with $E2E_CONFIG; prints what each journey does; exits non-zero on a failure.
//
//   E2E_CONFIG=... node dist/clients/ts_journeys.js [JOURNEY ...]
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { auth, UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { Browser, BrowserError } from './browser.js';

const CFG = JSON.parse(readFileSync(process.env.E2E_CONFIG!, 'utf8'));
const ISSUER: string = CFG.issuer;
const STEP_TIMEOUT_MS = 30_000;

const say = (line: string) => console.log(line);

class Failed extends Error {}

function check(cond: unknown, what: string): asserts cond {
    if (!cond) throw new Failed(what);
}

function short(v: string | null | undefined): string {
    if (v == null) return 'None';
    return v.length <= 40 ? v : `${v.slice(0, 37)}...`;
}

async function bounded<T>(what: string, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Failed(`${what}: no answer within ${STEP_TIMEOUT_MS / 1000}s`)), STEP_TIMEOUT_MS);
    });
    try {
        return await Promise.race([p, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

type Ev = { note?: string; method?: string; host?: string; path?: string; kind?: string; status?: number; error?: string; www?: string; text?: string };

/** Every HTTP exchange the SDK makes (its transport and auth() use the fetch given here) and
 *  what the browser did, printed step by step. */
class Trace {
    events: Ev[] = [];
    mark = 0;

    note(text: string) {
        this.events.push({ note: text });
    }

    fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
        const res = await fetch(input, init);
        const host = url.href.startsWith(ISSUER) ? 'tessera' : 'mcp';
        let kind = '';
        let label = url.pathname;
        if (method === 'POST' && url.pathname.endsWith('/token')) {
            const form = init?.body instanceof URLSearchParams ? init.body : new URLSearchParams(String(init?.body ?? ''));
            kind = form.get('grant_type') ?? '?';
            if (new Headers(init?.headers).has('authorization')) label += form.has('client_id') ? ' (Basic + client_id in body)' : ' (Basic)';
            else if (form.has('client_secret')) label += ' (client_secret_post)';
        } else if (method === 'POST' && host === 'mcp') {
            try {
                const m = JSON.parse(String(init?.body));
                kind = m.method === 'tools/call' ? `tools/call ${m.params.name}` : m.method;
            } catch {
                // not JSON-RPC
            }
            label = '';
        }
        let error = '';
        if (res.status >= 400 && host === 'tessera') {
            try {
                error = ((await res.clone().json()) as { error?: string }).error ?? '';
            } catch {
                // not an OAuth error body
            }
        }
        this.events.push({
            method,
            host,
            path: url.pathname,
            kind,
            status: res.status,
            error,
            www: res.headers.get('www-authenticate') ?? '',
            text: `${method} ${host}${label ? ' ' + label : ''}${kind ? ' ' + kind : ''} -> ${res.status}${error ? ' ' + error : ''}`
        });
        return res;
    };

    flush(indent = '      ') {
        for (const e of this.events.slice(this.mark)) say(`${indent}${e.note ?? e.text}`);
        this.mark = this.events.length;
    }

    requests(since = 0): Ev[] {
        return this.events.slice(since).filter(e => e.note === undefined);
    }

    tokenGrants(since = 0): string[] {
        return this.requests(since)
            .filter(e => e.path!.endsWith('/token'))
            .map(e => e.kind!);
    }
}

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
        opts: { authMethod?: string; clientMetadataUrl?: string; seedClient?: OAuthClientInformationMixed } = {}
    ) {
        this.url = CFG.servers[server];
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
            this.transport = new StreamableHTTPClientTransport(new URL(this.url), { authProvider: this.provider, fetch: this.trace.fetch });
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

    async call(tool: string, args: Record<string, unknown> = {}): Promise<any> {
        const r = await this.op(tool, () => this.client.callTool({ name: tool, arguments: args }));
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
        return JSON.parse(Buffer.from(this.provider.tokenSet!.access_token.split('.')[1], 'base64url').toString());
    }
}

const newBrowser = () => new Browser(ISSUER, CFG.username, CFG.password);

async function waitForExpiry(c: TsClient) {
    const delay = Math.max(0, c.claims().exp * 1000 - Date.now() + 1200);
    say(`      waiting ${(delay / 1000).toFixed(1)}s for the access token to expire`);
    await sleep(delay);
}

function prmUrl(resource: string): URL {
    const u = new URL(resource);
    return new URL(`/.well-known/oauth-protected-resource${u.pathname === '/' ? '' : u.pathname}`, u);
}

function tesseraCli(...args: string[]): string {
    return execFileSync(CFG.tessera, args, { env: { ...process.env, DATABASE_URL: CFG.database_url }, encoding: 'utf8', timeout: 60_000 });
}

async function revoke(token: string, hint: string, clientId: string) {
    const res = await fetch(`${ISSUER}/revoke`, { method: 'POST', body: new URLSearchParams({ token, token_type_hint: hint, client_id: clientId }) });
    check(res.status === 200, `revoke: ${res.status}`);
}

/** The server (introspecting) refuses the revoked grant's unexpired access token at once:
 *  Tessera applies a revocation to its own state before answering /revoke (RFC 7009 §2.2). */
async function refusedAfterRevocation(url: string, token: string) {
    const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })
    });
    await res.body?.cancel();
    check(res.status === 401, `revoked grant's access token answered ${res.status}, expected 401 at once`);
    say('    the unexpired access token is refused at once (introspection: active=false)');
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

const JOURNEYS: Record<string, { doc: string; run: () => Promise<void> }> = {
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

async function main() {
    const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(JOURNEYS);
    const passed: string[] = [];
    const failed: string[] = [];
    for (const name of names) {
        const j = JOURNEYS[name];
        say(`\n== journey ${name} (TypeScript SDK @modelcontextprotocol/sdk ${CFG.versions.ts_sdk}): ${j.doc}`);
        const started = Date.now();
        try {
            await j.run();
            passed.push(name);
            say(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
        } catch (e) {
            failed.push(name);
            say(`FAIL ${name} (${((Date.now() - started) / 1000).toFixed(1)}s): ${(e as Error).constructor.name}: ${(e as Error).message}`);
            if (!(e instanceof Failed) && !(e instanceof BrowserError)) say(String((e as Error).stack));
        }
    }
    say(`\ntypescript journeys: ${passed.length} passed, ${failed.length} failed${failed.length ? ': ' + failed.join(', ') : ''}`);
    process.exit(failed.length ? 1 : 0);
}

void main();
