// A person at a browser, as plain HTTP (see browser.py): follows Tessera's redirects, signs in
// and answers the consent page with the form posts a browser sends (session cookie, hidden
// csrf_token and request fields, Origin and Sec-Fetch-Site), until Tessera redirects to the
// client's redirect URI, whose URL is handed back.

export class BrowserError extends Error {}

export class Browser {
    private cookies = new Map<string, string>();
    pages: string[] = [];
    log: (line: string) => void = () => {};

    constructor(
        private issuer: string,
        private username: string,
        private password: string
    ) {}

    async authorize(url: string, decision = 'allow'): Promise<string> {
        const seen: string[] = [];
        let res = await this.get(url);
        for (let i = 0; i < 6; i++) {
            if (res.status !== 302 && res.status !== 303) {
                throw new BrowserError(
                    `expected a redirect from ${new URL(res.url || url).pathname}, got ${res.status}: ${pageText(await res.text())}`
                );
            }
            const next = new URL(res.headers.get('location')!, this.issuer).href;
            if (next.startsWith(`${this.issuer}/login`)) {
                seen.push('login');
                res = await this.submit(next, { username: this.username, password: this.password });
            } else if (next.startsWith(`${this.issuer}/consent`)) {
                seen.push('consent');
                res = await this.submit(next, { decision });
            } else {
                this.pages.push(...seen);
                const u = new URL(next);
                this.log(
                    `browser: ${seen.join(' + ') || 'no page (remembered)'} -> redirect to ${u.pathname} with ${[...u.searchParams.keys()].sort().join(', ')}`
                );
                return next;
            }
        }
        throw new BrowserError('too many redirects');
    }

    private async submit(pageUrl: string, fields: Record<string, string>): Promise<Response> {
        const page = await this.get(pageUrl);
        const html = await page.text();
        if (page.status !== 200) throw new BrowserError(`${new URL(pageUrl).pathname}: ${page.status} ${pageText(html)}`);
        // The login page may carry one form per identity provider before the password form: the
        // form posting to /login or /consent is the one.
        const form = [...html.matchAll(/<form method="post" action="([^"]+)"([\s\S]*?)<\/form>/g)].find(m =>
            /\/(login|consent)$/.test(unescape(m[1]))
        );
        if (!form) throw new BrowserError(`no login or consent form on ${pageUrl}`);
        const data = new URLSearchParams();
        for (const m of form[2].matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) data.set(m[1], unescape(m[2]));
        // Checked, enabled checkboxes are sent as a browser sends them (the consent page's scopes).
        for (const m of form[2].matchAll(/<input type="checkbox"[^>]*? name="([^"]+)" value="([^"]*)" checked( disabled)?/g)) {
            if (!m[3]) data.set(unescape(m[1]), unescape(m[2]));
        }
        for (const [k, v] of Object.entries(fields)) data.set(k, v);
        return this.fetch(new URL(unescape(form[1]), pageUrl).href, {
            method: 'POST',
            body: data,
            headers: { origin: new URL(this.issuer).origin, 'sec-fetch-site': 'same-origin' }
        });
    }

    private get(url: string): Promise<Response> {
        return this.fetch(url, { method: 'GET' });
    }

    /** Open a URL in this browser (its cookies sent and kept) without following the redirect:
     *  e.g. an RP-initiated logout URL, whose 303 the caller inspects. */
    visit(url: string): Promise<Response> {
        return this.get(url);
    }

    /** The cookies this browser holds, to replay them in another browser. */
    cookieJar(): Map<string, string> {
        return new Map(this.cookies);
    }

    useCookies(jar: Map<string, string>) {
        this.cookies = new Map(jar);
    }

    private async fetch(url: string, init: RequestInit): Promise<Response> {
        const headers = new Headers(init.headers);
        if (this.cookies.size) headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
        const res = await fetch(url, { ...init, headers, redirect: 'manual' });
        for (const c of res.headers.getSetCookie()) {
            const [pair, ...attrs] = c.split(';');
            const eq = pair.indexOf('=');
            const name = pair.slice(0, eq).trim();
            // A cookie set to expire (Max-Age=0 or an Expires in the past) is deleted, as a browser does.
            const expired = attrs.some(a => {
                const [k, v = ''] = a.split('=').map(x => x.trim());
                return (/^max-age$/i.test(k) && Number(v) <= 0) || (/^expires$/i.test(k) && Date.parse(v) <= Date.now());
            });
            if (expired) this.cookies.delete(name);
            else this.cookies.set(name, pair.slice(eq + 1).trim());
        }
        return res;
    }
}

function unescape(s: string): string {
    return s
        .replace(/&quot;/g, '"')
        .replace(/&#x27;|&#39;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&');
}

function pageText(html: string): string {
    return html.replace(/<[^>]+>/g, ' ').split(/\s+/).join(' ').trim().slice(0, 300);
}
