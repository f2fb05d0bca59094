// What the TypeScript journeys share whatever SDK they drive (ts_journeys.ts: @modelcontextprotocol/sdk
// 1.x; ts2_journeys.ts: @modelcontextprotocol/client 2.x; conformance.ts: the official conformance
// suite): the run's config, checks, an HTTP trace, Tessera's CLI and endpoints, and the runner
// that prints `PASS name` / `FAIL name` lines for e2e/run's summary.
import { execFileSync } from 'node:child_process';
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
