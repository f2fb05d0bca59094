// An OpenID Connect relying party built with `openid-client` (npm, by Filip Skokan / panva; 6.9.1,
// pinned in package.json; on top of `oauth4webapi` 3.8.9 and `jose`), unmodified, signs a person in
// at Tessera as its OpenID Provider. Only the library's documented v6 API is used
// (https://github.com/panva/openid-client/tree/v6.9.1/docs, README "Quick start"):
//
//   discovery(issuer, client_id, metadata, None(), { execute: [allowInsecureRequests,
//       enableNonRepudiationChecks], [customFetch] })   OpenID Connect Discovery 1.0; a public
//       client (token_endpoint_auth_method none); allowInsecureRequests is the documented opt-in
//       for the loopback http issuer; enableNonRepudiationChecks makes the library verify every
//       ID token's JWS signature with the keys of jwks_uri (it skips that by default for the
//       token endpoint's TLS-protected answers)
//   randomPKCECodeVerifier, calculatePKCECodeChallenge (S256), randomNonce, randomState
//   buildAuthorizationUrl(config, {redirect_uri, scope, code_challenge, nonce, state, max_age, prompt})
//   authorizationCodeGrant(config, callbackUrl, {pkceCodeVerifier, expectedNonce, expectedState,
//       maxAge, idTokenExpected})   checks the authorization response (state, RFC 9207 iss, error)
//       and the ID token (signature, alg, iss, aud, azp, exp, iat, nonce, auth_time vs max_age)
//   TokenEndpointResponseHelpers.claims()   the validated ID token claims
//   fetchUserInfo(config, accessToken, expectedSubject)   checks the UserInfo sub
//   refreshTokenGrant(config, refreshToken)   validates the refreshed ID token the same way
//   buildEndSessionUrl(config, {id_token_hint, post_logout_redirect_uri, state})   RP-Initiated Logout 1.0
//   AuthorizationResponseError   an error redirect (here login_required after the logout)
//
// The library does not check `at_hash` in the code flow (OPTIONAL there, OpenID Connect Core
// §3.1.3.6): the journey checks it itself (Core §3.1.3.8), and a few other things a library has
// no way to know (the subject of the seeded user, that a refreshed ID token keeps sub, auth_time
// and sid, Core §12.2). The person's browser is browser.ts (login and consent forms over HTTP).
// Run by e2e/run with $E2E_CONFIG; prints what the journey does; exits non-zero on a failure.
//
//   E2E_CONFIG=... node dist/clients/oidc_openid_client.js [JOURNEY ...]
import { createHash } from 'node:crypto';
import * as client from 'openid-client';
import { Browser } from './browser.js';
import { CFG, ISSUER, Trace, bounded, canonicalJson, check, runJourneys, say, short, type Journey } from './kit.js';

const OIDC = CFG.oidc;
const SCOPE = 'openid profile email offline_access';
const MAX_AGE = 600;

function header(jwt: string): Record<string, any> {
    return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString());
}

/** OpenID Connect Core §3.1.3.6: base64url of the left half of SHA-256 (RS256/ES256) of the token. */
function halfHash(token: string): string {
    return createHash('sha256').update(token, 'ascii').digest().subarray(0, 16).toString('base64url');
}

/** What the seeded person's ID token says, whoever validated it. */
function checkIdentity(claims: client.IDToken | client.UserInfoResponse, what: string) {
    check(claims.sub === OIDC.sub, `${what}: sub ${claims.sub}, want the seeded user's ${OIDC.sub}`);
    check(claims.email === OIDC.email && claims.email_verified === true, `${what}: email ${claims.email} verified=${claims.email_verified}`);
    check(claims.name === OIDC.name, `${what}: name ${JSON.stringify(claims.name)}, want ${JSON.stringify(OIDC.name)}`);
    check(claims.preferred_username === OIDC.username, `${what}: preferred_username ${claims.preferred_username}`);
    check(typeof claims.updated_at === 'number', `${what}: updated_at ${claims.updated_at}`);
}

async function openidClientJourney() {
    const rp = OIDC.clients['openid-client'];
    const t = new Trace();
    const version = CFG.versions.openid_client;

    say(`    discovery(${ISSUER}, public client ${short(rp.client_id)}) with allowInsecureRequests + enableNonRepudiationChecks`);
    const config = await bounded(
        'discovery',
        client.discovery(new URL(ISSUER), rp.client_id, { token_endpoint_auth_method: 'none' }, client.None(), {
            execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
            [client.customFetch]: (url, options) => t.fetch(url, options as RequestInit)
        })
    );
    t.flush();
    const meta = config.serverMetadata();
    check(t.requests()[0]?.path === '/.well-known/openid-configuration', `discovery fetched ${t.requests()[0]?.path}`);
    check(meta.issuer === ISSUER, `issuer ${meta.issuer}`);
    check(meta.end_session_endpoint === `${ISSUER}/logout`, `end_session_endpoint ${meta.end_session_endpoint}`);
    check(meta.supportsPKCE('S256'), 'code_challenge_methods_supported has S256');
    say(`    metadata: issuer ${meta.issuer}, jwks_uri ${meta.jwks_uri}, userinfo ${meta.userinfo_endpoint}, end_session ${meta.end_session_endpoint}`);
    // The OpenID discovery document and the RFC 8414 one are the same document.
    const [oidcDoc, oauthDoc] = await Promise.all(
        ['openid-configuration', 'oauth-authorization-server'].map(async name => (await t.fetch(`${ISSUER}/.well-known/${name}`)).json())
    );
    t.flush();
    check(canonicalJson(oidcDoc) === canonicalJson(oauthDoc), 'openid-configuration and oauth-authorization-server differ');
    say('    /.well-known/oauth-authorization-server (RFC 8414) is the same document');

    // --- Authorization: PKCE S256, nonce, state, max_age; login + consent in the browser -------
    const browser = new Browser(ISSUER, OIDC.username, OIDC.password);
    browser.log = line => t.note(line);
    const authorize = async (extra: Record<string, string> = {}) => {
        const verifier = client.randomPKCECodeVerifier();
        const checks = { pkceCodeVerifier: verifier, expectedNonce: client.randomNonce(), expectedState: client.randomState() };
        const url = client.buildAuthorizationUrl(config, {
            redirect_uri: rp.redirect_uri,
            scope: SCOPE,
            code_challenge: await client.calculatePKCECodeChallenge(verifier),
            code_challenge_method: 'S256',
            nonce: checks.expectedNonce,
            state: checks.expectedState,
            max_age: String(MAX_AGE),
            ...extra
        });
        check(url.searchParams.get('client_id') === rp.client_id && !url.searchParams.has('resource'), `authorization URL ${url}`);
        t.note(`buildAuthorizationUrl: /authorize scope='${url.searchParams.get('scope')}' code_challenge_method=S256 nonce state max_age=${MAX_AGE}${extra.prompt ? ` prompt=${extra.prompt}` : ''}`);
        const callback = new URL(await bounded('browser', browser.authorize(url.href)));
        check(callback.origin + callback.pathname === rp.redirect_uri, `redirected to ${callback.origin + callback.pathname}, want ${rp.redirect_uri}`);
        return { callback, checks };
    };

    say(`    authorize (scope '${SCOPE}'): the person signs in and consents`);
    const first = await authorize();
    t.flush();
    check(JSON.stringify(browser.pages) === '["login","consent"]', `pages seen: ${browser.pages}`);
    check(first.callback.searchParams.get('iss') === ISSUER, `RFC 9207 iss ${first.callback.searchParams.get('iss')}`);

    let mark = t.events.length;
    const tokens = await bounded(
        'authorizationCodeGrant',
        client.authorizationCodeGrant(config, first.callback, { ...first.checks, maxAge: MAX_AGE, idTokenExpected: true })
    );
    t.flush();
    const tokenReqs = t.tokenRequests(mark);
    check(tokenReqs.length === 1 && tokenReqs[0].auth === 'none' && tokenReqs[0].form?.get('client_id') === rp.client_id, 'one code exchange as a public client (client_id, no secret)');
    check(tokenReqs[0].form?.get('code_verifier') === first.checks.pkceCodeVerifier && !tokenReqs[0].form?.has('resource'), 'code_verifier sent, no resource');
    const claims = tokens.claims()!;
    check(claims, 'an ID token');
    const idHeader = header(tokens.id_token!);
    check(idHeader.alg === 'RS256' && idHeader.kid, `ID token header ${JSON.stringify(idHeader)} (the client's default RS256)`);
    check(claims.iss === ISSUER && claims.aud === rp.client_id && claims.azp === rp.client_id, `iss/aud/azp ${claims.iss} ${JSON.stringify(claims.aud)} ${claims.azp}`);
    check(claims.nonce === first.checks.expectedNonce, 'nonce echoed');
    check(typeof claims.sid === 'string' && claims.sid.length > 0, `sid ${claims.sid}`);
    const now = Date.now() / 1000;
    check(typeof claims.auth_time === 'number' && claims.auth_time <= now + 5 && claims.auth_time > now - 60, `auth_time ${claims.auth_time} (now ${now})`);
    check(claims.at_hash === halfHash(tokens.access_token), `at_hash ${claims.at_hash}, want ${halfHash(tokens.access_token)}`);
    checkIdentity(claims, 'ID token');
    check(tokens.refresh_token, 'a refresh token (offline_access)');
    check(tokens.token_type.toLowerCase() === 'bearer' && typeof tokens.expires_in === 'number', `token_type ${tokens.token_type}, expires_in ${tokens.expires_in}`);
    const granted = (tokens.scope ?? '').split(' ');
    check(['openid', 'profile', 'email', 'offline_access'].every(s => granted.includes(s)), `granted scope '${tokens.scope}'`);
    say(`    authorizationCodeGrant: state, iss, PKCE ok; ID token ${idHeader.alg} (kid ${short(idHeader.kid)}) validated by openid-client ${version}: signature (JWKS), iss, aud, azp, exp, iat, nonce, auth_time within max_age`);
    say(`      claims: sub ${claims.sub}, name ${JSON.stringify(claims.name)}, preferred_username ${claims.preferred_username}, email ${claims.email} (verified), sid ${short(claims.sid as string)}; at_hash matches the access token (checked here)`);

    // --- UserInfo -------------------------------------------------------------------------------
    mark = t.events.length;
    const userinfo = await bounded('fetchUserInfo', client.fetchUserInfo(config, tokens.access_token, claims.sub));
    t.flush();
    check(userinfo.sub === claims.sub, 'userinfo sub');
    checkIdentity(userinfo, 'userinfo');
    check(t.requests(mark).some(r => r.path === '/userinfo' && r.method === 'GET' && r.status === 200), 'GET /userinfo 200');
    say(`    fetchUserInfo(expectedSubject = ID token sub): ${JSON.stringify(userinfo)}`);

    // --- Refresh ----------------------------------------------------------------------------------
    mark = t.events.length;
    const refreshed = await bounded('refreshTokenGrant', client.refreshTokenGrant(config, tokens.refresh_token!));
    t.flush();
    check(JSON.stringify(t.tokenGrants(mark)) === '["refresh_token"]', `one refresh: ${t.tokenGrants(mark)}`);
    const again = refreshed.claims();
    check(again && refreshed.id_token !== tokens.id_token, 'the refresh returned a new ID token');
    check(header(refreshed.id_token!).alg === 'RS256', 'refreshed ID token RS256');
    check(again.iss === ISSUER && again.aud === rp.client_id && again.sub === claims.sub, 'refreshed: same iss, aud, sub (Core §12.2)');
    check(again.auth_time === claims.auth_time && again.sid === claims.sid, `refreshed: same auth_time (${again.auth_time}) and sid`);
    check(again.nonce === undefined, `refreshed: no nonce (${again.nonce})`);
    check(again.iat >= claims.iat, 'refreshed: iat not older');
    check(again.at_hash === halfHash(refreshed.access_token), 'refreshed: at_hash matches the new access token');
    checkIdentity(again, 'refreshed ID token');
    check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'refresh token rotated');
    check(refreshed.access_token !== tokens.access_token, 'new access token');
    const userinfo2 = await bounded('fetchUserInfo', client.fetchUserInfo(config, refreshed.access_token, claims.sub));
    t.flush();
    check(userinfo2.sub === claims.sub, 'userinfo with the refreshed access token');
    say('    refreshTokenGrant: new ID token validated by the library (signature, iss, aud, exp, iat); same sub, auth_time and sid, no nonce; refresh token rotated; userinfo ok with the new access token');

    // --- The session is alive: prompt=none signs in without a page ---------------------------------
    const silent = await authorize({ prompt: 'none' });
    t.flush();
    check(JSON.stringify(browser.pages) === '["login","consent"]', `prompt=none showed no page (${browser.pages})`);
    const silentTokens = await bounded('authorizationCodeGrant', client.authorizationCodeGrant(config, silent.callback, { ...silent.checks, maxAge: MAX_AGE }));
    t.flush();
    const silentClaims = silentTokens.claims()!;
    check(silentClaims.sid === claims.sid && silentClaims.auth_time === claims.auth_time && silentClaims.nonce === silent.checks.expectedNonce, 'prompt=none: same browser session (sid, auth_time), its own nonce');
    say('    prompt=none while signed in: a code at once (no page); its ID token has the same sid and auth_time');

    // --- RP-initiated logout -------------------------------------------------------------------------
    const signedIn = browser.cookieJar();
    const logoutState = client.randomState();
    const endSession = client.buildEndSessionUrl(config, {
        id_token_hint: refreshed.id_token!,
        post_logout_redirect_uri: rp.post_logout_redirect_uri,
        state: logoutState
    });
    check(endSession.origin + endSession.pathname === meta.end_session_endpoint && endSession.searchParams.get('client_id') === rp.client_id, `end-session URL ${endSession}`);
    say(`    buildEndSessionUrl: ${endSession.pathname}?${[...endSession.searchParams.keys()].join('&')}; the browser opens it`);
    const res = await bounded('end session', browser.visit(endSession.href));
    const location = res.headers.get('location') ?? '';
    await res.body?.cancel();
    say(`      GET tessera /logout -> ${res.status} Location: ${location}`);
    // What the browser was told about its cookies (values left out).
    for (const c of res.headers.getSetCookie()) say(`      Set-Cookie: ${c.replace(/^([^=]+)=[^;]*/, '$1=...')}`);
    say(`      cookies the browser holds: before the logout ${[...signedIn.keys()].join(', ') || 'none'}; after it ${[...browser.cookieJar().keys()].join(', ') || 'none'}`);
    check(res.status === 303, `end session answered ${res.status}, want 303`);
    const back = new URL(location, ISSUER);
    check(back.origin + back.pathname === rp.post_logout_redirect_uri, `redirected to ${back.origin + back.pathname}, want ${rp.post_logout_redirect_uri}`);
    check(back.searchParams.get('state') === logoutState, `state ${back.searchParams.get('state')}, want ${logoutState}`);

    // The session really ended: prompt=none now comes back with login_required, in this browser and
    // in one replaying the cookies it held before the logout (the session is gone on the server).
    const replay = new Browser(ISSUER, OIDC.username, OIDC.password);
    replay.log = line => t.note(line);
    replay.useCookies(signedIn);
    for (const [who, b] of [
        ['the same browser', browser],
        ['a browser replaying the cookies held before the logout', replay]
    ] as const) {
        const verifier = client.randomPKCECodeVerifier();
        const state = client.randomState();
        const url = client.buildAuthorizationUrl(config, {
            redirect_uri: rp.redirect_uri,
            scope: SCOPE,
            code_challenge: await client.calculatePKCECodeChallenge(verifier),
            code_challenge_method: 'S256',
            nonce: client.randomNonce(),
            state,
            prompt: 'none'
        });
        const callback = new URL(await bounded('browser', b.authorize(url.href)));
        t.flush();
        let refused: unknown;
        try {
            await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state });
        } catch (e) {
            refused = e;
        }
        check(refused instanceof client.AuthorizationResponseError && refused.error === 'login_required', `after logout, prompt=none (${who}): ${refused ?? 'a code'} ${callback.search}`);
        check(callback.searchParams.get('state') === state && callback.searchParams.get('iss') === ISSUER, 'the error redirect carries state and iss');
        say(`    after logout, prompt=none in ${who}: AuthorizationResponseError ${refused.error} (${refused.error_description ?? ''})`);
    }
}

const JOURNEYS: Record<string, Journey> = {
    'oidc-openid-client': {
        doc:
            'openid-client (panva) as an OpenID Connect relying party, public client: discovery, authorization code + PKCE S256 + nonce + state + max_age, ' +
            'login + consent, ID token (RS256) validated by the library against the JWKS, userinfo, refresh (new ID token, rotated refresh token), ' +
            'prompt=none, RP-initiated logout (303 to the registered URI with state) and prompt=none -> login_required afterwards.',
        run: openidClientJourney
    }
};

void runJourneys('openid-client journeys', `openid-client ${CFG.versions.openid_client}, node ${process.version}`, JOURNEYS);
