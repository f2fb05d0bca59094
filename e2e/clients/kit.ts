// What the TypeScript journeys share whatever SDK they drive (ts_journeys.ts: @modelcontextprotocol/sdk
// 1.x; ts2_journeys.ts: @modelcontextprotocol/client 2.x; conformance.ts: the official conformance
// suite): the run's config, checks, an HTTP trace, Tessera's CLI and endpoints, the journey
// through `tessera gateway` both SDKs run, and the runner that prints `PASS name` / `FAIL name`
// lines for e2e/run's summary.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Browser, BrowserError } from './browser.js';

export const CFG = JSON.parse(readFileSync(process.env.E2E_CONFIG!, 'utf8'));
export const ISSUER: string = CFG.issuer;
export const STEP_TIMEOUT_MS = 30_000;

export const say = (line: string) => console.log(line);

/** A check of the journey failed (printed without a stack trace). */
export class Failed extends Error {}

export function check(cond: unknown, what: string): asserts cond {
    if (!cond) throw new Failed(what);
}

export function short(v: string | null | undefined): string {
    if (v == null) return 'None';
    return v.length <= 40 ? v : `${v.slice(0, 37)}...`;
}

/** Every step that waits on the network is bounded. */
export async function bounded<T>(what: string, p: Promise<T>, ms = STEP_TIMEOUT_MS): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Failed(`${what}: no answer within ${ms / 1000}s`)), ms);
    });
    try {
        return await Promise.race([p, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

export type Ev = {
    note?: string;
    method?: string;
    host?: string;
    path?: string;
    kind?: string;
    status?: number;
    error?: string;
    www?: string;
    retryAfter?: string;
    text?: string;
    /** the form of a /token or /register request, for checks on what the SDK sent */
    form?: URLSearchParams;
    auth?: string;
    /** the JSON body of a POST /register, as sent */
    body?: string;
};

/** Every HTTP exchange the SDK makes (its transport and auth() use the fetch given here) and
 *  what the browser did, printed step by step. */
export class Trace {
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
        let form: URLSearchParams | undefined;
        let auth = '';
        const body = method === 'POST' && url.pathname === '/register' && host === 'tessera' ? String(init?.body ?? '') : undefined;
        if (method === 'POST' && url.pathname.endsWith('/token')) {
            form = init?.body instanceof URLSearchParams ? init.body : new URLSearchParams(String(init?.body ?? ''));
            kind = form.get('grant_type') ?? '?';
            if (new Headers(init?.headers).has('authorization')) {
                auth = 'client_secret_basic';
                label += form.has('client_id') ? ' (Basic + client_id in body)' : ' (Basic)';
            } else if (form.has('client_secret')) {
                auth = 'client_secret_post';
                label += ' (client_secret_post)';
            } else auth = 'none';
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
            form,
            auth,
            body,
            www: res.headers.get('www-authenticate') ?? '',
            retryAfter: res.headers.get('retry-after') ?? '',
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

    tokenRequests(since = 0): Ev[] {
        return this.requests(since).filter(e => e.method === 'POST' && e.path!.endsWith('/token'));
    }

    tokenGrants(since = 0): string[] {
        return this.tokenRequests(since).map(e => e.kind!);
    }
}

export const newBrowser = () => new Browser(ISSUER, CFG.username, CFG.password);

export function jwtClaims(token: string): Record<string, any> {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}

export async function waitForExpiry(accessToken: string) {
    const delay = Math.max(0, jwtClaims(accessToken).exp * 1000 - Date.now() + 1200);
    say(`      waiting ${(delay / 1000).toFixed(1)}s for the access token to expire`);
    await sleep(delay);
}

export function prmUrl(resource: string): URL {
    const u = new URL(resource);
    return new URL(`/.well-known/oauth-protected-resource${u.pathname === '/' ? '' : u.pathname}`, u);
}

export function tesseraCli(...args: string[]): string {
    return execFileSync(CFG.tessera, args, { env: { ...process.env, DATABASE_URL: CFG.database_url }, encoding: 'utf8', timeout: 60_000 });
}

export async function revoke(token: string, hint: string, clientId: string) {
    const res = await fetch(`${ISSUER}/revoke`, { method: 'POST', body: new URLSearchParams({ token, token_type_hint: hint, client_id: clientId }) });
    check(res.status === 200, `revoke: ${res.status}`);
}

/** The server (introspecting) refuses the revoked grant's unexpired access token at once:
 *  Tessera applies a revocation to its own state before answering /revoke (RFC 7009 §2.2). */
export async function refusedAfterRevocation(url: string, token: string) {
    const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })
    });
    await res.body?.cancel();
    check(res.status === 401, `revoked grant's access token answered ${res.status}, expected 401 at once`);
    say('    the unexpired access token is refused at once (introspection: active=false)');
}

// --- Through `tessera gateway` ---------------------------------------------------------------

/** RFC 8785 canonical JSON: object keys sorted by UTF-16 code units (what Array.sort does), no
 *  whitespace, strings and numbers as ECMAScript's JSON.stringify writes them. */
export function canonicalJson(v: unknown): string {
    if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
    if (v !== null && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        return `{${Object.keys(o)
            .sort()
            .map(k => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
            .join(',')}}`;
    }
    return JSON.stringify(v);
}

/** What the gateway records of a tool call's arguments: SHA-256 of their canonical JSON. */
export const argumentsDigest = (args: unknown) => createHash('sha256').update(canonicalJson(args), 'utf8').digest('hex');

export type AuditRow = { event: string; outcome: string; client_id: string; subject: string; resource: string; digest?: string; detail?: string };

/** `tessera audit tail --event tool.call --json` for one client, once the gateway's audit writer
 *  has stored at least `expected` records (bounded: 5 s). */
export async function auditedToolCalls(clientId: string, expected: number): Promise<AuditRow[]> {
    let rows: AuditRow[] = [];
    for (let i = 0; i < 50; i++) {
        const out = tesseraCli('audit', 'tail', '--event', 'tool.call', '--json', '--client', clientId, '--limit', '500');
        rows = out
            .split('\n')
            .filter(l => l.trim())
            .map(l => JSON.parse(l) as AuditRow);
        if (rows.length >= expected) return rows;
        await sleep(100);
    }
    throw new Failed(`the audit log holds ${rows.length} tool.call records for ${clientId}, expected ${expected}`);
}

export async function rawPost(url: string, token: string | undefined, body: unknown, origin?: string): Promise<Response> {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (origin) headers.origin = origin;
    return fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
}

export const INITIALIZE = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e raw', version: '1' } }
};

/** What the gateway journey needs of an SDK client (ts_journeys.ts: SDK 1.x; ts2_journeys.ts: v2). */
export interface GatewayClient {
    url: string;
    trace: Trace;
    authorizations(): number;
    lastAuthorize(): URL | undefined;
    clientId(): string;
    grantedScope(): string;
    accessToken(): string;
    connect(): Promise<void>;
    listTools(): Promise<string[]>;
    call(tool: string, args: Record<string, unknown>, onprogress?: (progress: number) => void): Promise<any>;
    /** Call a tool the token lacks a scope for: the SDK steps up by itself, or the application
     *  drives it (then `how` says how). */
    stepUpCall(tool: string, args: Record<string, unknown>): Promise<{ result: any; how: string }>;
    /** The same application connecting again (same registration and tokens) with this Origin. */
    withOrigin(origin: string): GatewayClient;
    close(): Promise<void>;
}

export const SEARCH_ARGS = { query: 'tessera gateway', limit: 3, filters: { lang: 'en', kind: 'guide' } };
export const DELETE_ARGS = { path: '/srv/docs/brouillon-été.md' };
export const LONG_ARGS = { pause_ms: 50 }; // 1,000 notifications, a 50 ms pause after every hundredth

/** An SDK client through `tessera gateway` to an MCP server with no auth code: discovery from the
 *  gateway's 401, registration, login, tools/list filtered by scope, two step-ups, the per-tool
 *  rate limit, a tool the policy denies, 1,000 progress notifications streamed, another resource's
 *  token, a foreign Origin, and the tool.call audit records with their argument digests. */
export async function gatewayJourney(server: string, c: GatewayClient) {
    const gw: string = CFG.gateways[server];
    const other = Object.entries(CFG.gateways as Record<string, string>).find(([name]) => name !== server)![1];
    const prm = prmUrl(gw).href;
    const rate: number = CFG.gateway_search_rate;
    const expected: [string, string, string][] = []; // (tool, outcome, digest) as the audit must show them
    const t = c.trace;
    say(`    connect to the gateway ${gw} (upstream ${CFG.upstreams[server]}, no auth code)`);
    await c.connect();
    try {
        const reqs = t.requests();
        t.flush();
        const challenge = `Bearer resource_metadata="${prm}", scope="mcp"`;
        check(reqs[0].status === 401 && reqs[0].www === challenge, `first request: 401 with ${challenge}, got ${reqs[0].status} ${reqs[0].www}`);
        check(
            reqs.some(r => r.host === 'mcp' && r.path === new URL(prm).pathname && r.status === 200),
            'protected resource metadata fetched from the gateway'
        );
        check(reqs.some(r => r.path === '/.well-known/oauth-authorization-server' && r.status === 200), 'authorization server metadata fetched');
        check(JSON.stringify(reqs.filter(r => r.path === '/register').map(r => r.status)) === '[201]', 'one dynamic registration (201)');
        check(c.authorizations() === 1 && c.lastAuthorize()!.searchParams.get('resource') === gw, "one authorization for the gateway's URL");
        let asked = (c.lastAuthorize()!.searchParams.get('scope') ?? '').split(' ');
        check(asked.includes('mcp') && !asked.includes('tools:read'), `first authorization asks the baseline scope: ${asked}`);
        const clientId = c.clientId();
        say(`    401 -> PRM (gateway) -> Tessera -> register -> login + consent; client_id ${short(clientId)}, granted '${c.grantedScope()}'`);
        let tools = await c.listTools();
        t.flush();
        check(tools.length === 0, `tools/list with the baseline scope only: ${tools}`);
        say('    tools/list with scope mcp: [] (the gateway filters out every tool the token may not call)');

        say('    search_docs needs tools:read');
        let mark = t.events.length;
        const searched = await c.stepUpCall('search_docs', SEARCH_ARGS);
        t.flush();
        let denied = t.requests(mark).find(r => r.status === 403);
        // The challenge names what the token holds and what the call needs (the gateway's union).
        const union = (held: string[], needed: string[]) => [...new Set([...held, ...needed])].filter(s => s).sort().join(' ');
        let want = `Bearer error="insufficient_scope", scope="${union(asked, ['mcp', 'tools:read'])}", resource_metadata="${prm}"`;
        check(denied?.www === want, `403 challenge ${denied?.www}, want ${want}`);
        check(c.authorizations() === 2, `re-authorized once (${c.authorizations() - 1})`);
        asked = (c.lastAuthorize()!.searchParams.get('scope') ?? '').split(' ');
        check(asked.includes('mcp') && asked.includes('tools:read'), `step-up asks mcp tools:read (${asked})`);
        check(searched.result.query === SEARCH_ARGS.query && canonicalJson(searched.result.filters) === canonicalJson(SEARCH_ARGS.filters), `the upstream got the arguments: ${JSON.stringify(searched.result)}`);
        // One record per refused try: SDK 1.32.2 tries twice (before and after its refresh).
        for (const _ of t.requests(mark).filter(r => r.status === 403)) expected.push(['search_docs', 'insufficient_scope', argumentsDigest(SEARCH_ARGS)]);
        expected.push(['search_docs', 'allowed', argumentsDigest(SEARCH_ARGS)]);
        tools = await c.listTools();
        t.flush();
        check(JSON.stringify(tools) === '["search_docs","long_task"]', `tools/list with tools:read: ${tools}`);
        say(`    403 -> stepped up ${searched.how}; search_docs ok; tools/list now ${JSON.stringify(tools)}`);

        say(`    search_* is limited to ${rate} calls per client and minute`);
        mark = t.events.length;
        let allowed = 1;
        let limited: Error | undefined;
        for (let i = 0; i < rate + 2 && !limited; i++) {
            const args = { query: `page ${i}`, limit: i };
            try {
                await c.call('search_docs', args);
                allowed++;
                expected.push(['search_docs', 'allowed', argumentsDigest(args)]);
            } catch (e) {
                limited = e as Error;
                expected.push(['search_docs', 'rate_limited', argumentsDigest(args)]);
            }
        }
        t.flush();
        const tooMany = t.requests(mark).filter(r => r.status === 429);
        check(limited && allowed === rate && tooMany.length === 1, `${allowed} calls allowed, then ${tooMany.length} 429 (${limited?.message})`);
        check(/^[1-9][0-9]*$/.test(tooMany[0].retryAfter!), `Retry-After ${tooMany[0].retryAfter}`);
        check(c.authorizations() === 2, 'a 429 is no reason to re-authorize');
        say(`    ${allowed} allowed, then 429 Retry-After: ${tooMany[0].retryAfter} (the SDK throws ${limited!.constructor.name}: ${limited!.message.slice(0, 90)})`);

        say('    delete_file needs tools:write');
        mark = t.events.length;
        const deleted = await c.stepUpCall('delete_file', DELETE_ARGS);
        t.flush();
        denied = t.requests(mark).find(r => r.status === 403);
        want = `Bearer error="insufficient_scope", scope="${union(asked, ['mcp', 'tools:read', 'tools:write'])}", resource_metadata="${prm}"`;
        check(denied?.www === want, `403 challenge ${denied?.www}, want ${want}`);
        check(c.authorizations() === 3, `re-authorized once more (${c.authorizations() - 2})`);
        asked = (c.lastAuthorize()!.searchParams.get('scope') ?? '').split(' ');
        check(['mcp', 'tools:read', 'tools:write'].every(s => asked.includes(s)), `step-up keeps tools:read: asked ${asked}`);
        check(deleted.result.tool === 'delete_file' && deleted.result.path === DELETE_ARGS.path, `upstream answer ${JSON.stringify(deleted.result)}`);
        for (const _ of t.requests(mark).filter(r => r.status === 403)) expected.push(['delete_file', 'insufficient_scope', argumentsDigest(DELETE_ARGS)]);
        expected.push(['delete_file', 'allowed', argumentsDigest(DELETE_ARGS)]);
        tools = await c.listTools();
        t.flush();
        check(JSON.stringify(tools) === '["search_docs","delete_file","long_task"]', `tools/list with tools:read tools:write: ${tools}`);
        say(`    403 (scope="mcp tools:read tools:write") -> stepped up ${deleted.how}, asking '${asked.join(' ')}'; delete_file ok; tools/list ${JSON.stringify(tools)}`);

        say('    secret_admin: the policy never names it');
        mark = t.events.length;
        let refusedWith: Error | undefined;
        try {
            await c.call('secret_admin', {});
        } catch (e) {
            refusedWith = e as Error;
        }
        t.flush();
        const refused = t.requests(mark);
        check(refusedWith, 'secret_admin was allowed');
        check(refused.length === 1 && refused[0].status === 403 && refused[0].www === '', '403 without a challenge: no scope would help');
        check(c.authorizations() === 3, 'no re-authorization for a tool no scope allows');
        expected.push(['secret_admin', 'not_allowed', argumentsDigest({})]);
        say(`    403, no WWW-Authenticate; the SDK throws ${refusedWith!.constructor.name} (${refusedWith!.message.slice(0, 80)}) and does not re-authorize`);

        say('    long_task: 1,000 progress notifications through the gateway');
        const seen: number[] = [];
        let firstAt = 0;
        const started = Date.now();
        const out = await c.call('long_task', LONG_ARGS, p => {
            if (!seen.length) firstAt = Date.now();
            seen.push(p);
        });
        const done = Date.now();
        t.flush();
        check(out.tool === 'long_task' && out.steps === 1000, `long_task result ${JSON.stringify(out)}`);
        check(seen.length === 1000 && seen.every((p, i) => p === i + 1), `progress 1..1000 in order: got ${seen.length}, first ${seen.slice(0, 3)}, last ${seen.slice(-3)}`);
        // The server pauses 10 x 50 ms after the first notification: a buffered answer would
        // deliver the first notification together with the result.
        check(done - firstAt >= 300, `the first notification arrived ${done - firstAt} ms before the result: the stream was buffered`);
        expected.push(['long_task', 'allowed', argumentsDigest(LONG_ARGS)]);
        say(`    onprogress saw 1..1000 in order, the first ${done - firstAt} ms before the result (streamed, not buffered; ${done - started} ms in all)`);

        say('    raw requests with the same access token');
        const token = c.accessToken();
        let res = await rawPost(other, token, INITIALIZE);
        const www = res.headers.get('www-authenticate') ?? '';
        await res.body?.cancel();
        check(res.status === 401 && www.includes('error="invalid_token"') && www.includes(prmUrl(other).href), `another gateway refuses the token: ${res.status} ${www}`);
        say(`    token for ${gw} -> gateway ${other}: 401 (${www})`);
        for (const tok of [token, undefined]) {
            res = await rawPost(gw, tok, INITIALIZE, 'https://evil.example');
            const body = (await res.json()) as { error?: string };
            check(res.status === 403 && body.error === 'forbidden', `Origin https://evil.example: ${res.status} ${JSON.stringify(body)}`);
        }
        say('    Origin: https://evil.example -> 403 forbidden (with or without a token)');
        const own = new URL(gw).origin;
        res = await rawPost(gw, token, INITIALIZE, own);
        await res.body?.cancel();
        check(res.status === 200 && res.headers.get('access-control-allow-origin') === own, `the gateway's own Origin: ${res.status}`);
        say(`    Origin: ${own} (its own) -> 200 with Access-Control-Allow-Origin`);

        const evil = c.withOrigin('https://evil.example');
        let evilError: Error | undefined;
        try {
            await evil.connect();
        } catch (e) {
            evilError = e as Error;
        }
        await evil.close();
        evil.trace.flush();
        check(evilError, 'the SDK connected with Origin: https://evil.example');
        check(evil.trace.requests()[0]?.status === 403 && c.authorizations() === 3, 'initialize got 403 and the SDK did not try to authorize');
        say(`    the SDK with Origin: https://evil.example: initialize -> 403, ${evilError!.constructor.name}: ${evilError!.message.slice(0, 70)}`);

        const rows = await auditedToolCalls(clientId, expected.length);
        const got = rows.map(row => {
            const detail = Object.fromEntries((row.detail ?? '').split(' ').map(kv => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
            check(row.resource === gw && row.client_id === clientId && row.subject, `audit row ${JSON.stringify(row)}`);
            if (detail.outcome === 'allowed') {
                check(detail.upstream_status === '200' && Number(detail.latency_ms) >= 0, `an allowed call records the upstream: ${row.detail}`);
            }
            return [detail.tool, detail.outcome, row.digest ?? null];
        });
        check(JSON.stringify(got) === JSON.stringify(expected), `audit (tool, outcome, digest):\n      got      ${JSON.stringify(got)}\n      expected ${JSON.stringify(expected)}`);
        const outcomes = [...new Set(rows.map(r => r.outcome))].sort();
        say(`    tessera audit tail --event tool.call --json: ${rows.length} records as expected, digests = SHA-256 of the RFC 8785 arguments, outcomes ${outcomes}`);
        say(`      e.g. ${rows[1].detail} digest ${rows[1].digest!.slice(0, 16)}... = sha256(${canonicalJson(SEARCH_ARGS)})`);
    } finally {
        await c.close();
    }
}

export type Journey = { doc: string; run: () => Promise<void> };

/** Run the named journeys (all when none is named), print PASS/FAIL lines, exit 1 on a failure. */
export async function runJourneys(runner: string, label: string, journeys: Record<string, Journey>) {
    const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(journeys);
    const passed: string[] = [];
    const failed: string[] = [];
    for (const name of names) {
        const j = journeys[name];
        if (!j) {
            failed.push(name);
            say(`FAIL ${name}: no such journey in ${runner}`);
            continue;
        }
        say(`\n== journey ${name} (${label}): ${j.doc}`);
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
    say(`\n${runner}: ${passed.length} passed, ${failed.length} failed${failed.length ? ': ' + failed.join(', ') : ''}`);
    process.exit(failed.length ? 1 : 0);
}
