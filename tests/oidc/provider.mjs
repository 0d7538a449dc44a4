#!/usr/bin/env node
// Test-only OpenID Connect provider for authflow's end-to-end tests.
//
// Wraps the npm package `oidc-provider` (panva) and listens on 127.0.0.1 only,
// over plain http.  It is NOT a production identity provider: passwords are
// stored in clear in a JSON file, all state is in memory, consent is granted
// automatically and there are test-only endpoints (/test/*) that mint tokens
// with the provider's own signing key.  See README.md next to this file.
//
// Usage:
//   node provider.mjs --port N --clients FILE --accounts FILE [--jwks FILE]
// or the same through the environment:
//   OIDC_PORT, OIDC_CLIENTS, OIDC_ACCOUNTS, OIDC_JWKS
// Port 0 (the default) lets the kernel pick a free port; the port actually
// used is in the one line printed on stdout: "ready http://127.0.0.1:PORT".
// Everything else (request log, provider events, errors) goes to stderr.
// OIDC_TEST_ENDPOINTS=0 turns the /test/* endpoints off.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const log = (...args) => process.stderr.write(`[oidc ${new Date().toISOString()}] ${args.join(' ')}\n`);

// ---------------------------------------------------------------- arguments

const { values: argv } = parseArgs({
  options: {
    port: { type: 'string' },
    clients: { type: 'string' },
    accounts: { type: 'string' },
    jwks: { type: 'string' },
  },
  allowPositionals: false,
});

const portArg = argv.port ?? process.env.OIDC_PORT ?? '0';
const clientsFile = argv.clients ?? process.env.OIDC_CLIENTS;
const accountsFile = argv.accounts ?? process.env.OIDC_ACCOUNTS;
const jwksFile = argv.jwks ?? process.env.OIDC_JWKS;
const testEndpoints = (process.env.OIDC_TEST_ENDPOINTS ?? '1') !== '0';
const HOST = '127.0.0.1';

function die(msg) {
  log(`fatal: ${msg}`);
  process.exit(2);
}

if (!/^\d+$/.test(portArg) || Number(portArg) > 65535) die(`bad port ${portArg}`);
if (!clientsFile) die('no clients file (--clients FILE or OIDC_CLIENTS)');
if (!accountsFile) die('no accounts file (--accounts FILE or OIDC_ACCOUNTS)');

function readJson(file, what) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    return die(`cannot read ${what} file ${file}: ${err.message}`);
  }
}

// ----------------------------------------------------------------- clients

// clients.json: an array of client metadata objects (or {"clients": [...]}),
// passed to oidc-provider as static clients.  Unset fields take these defaults.
const CLIENT_DEFAULTS = {
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
};
let clients = readJson(clientsFile, 'clients');
if (!Array.isArray(clients)) clients = clients?.clients;
if (!Array.isArray(clients) || clients.length === 0) die(`${clientsFile}: expected a non-empty array of clients`);
clients = clients.map((c) => ({ ...CLIENT_DEFAULTS, ...c }));

// ---------------------------------------------------------------- accounts

// accounts.json: an array (or {"accounts": [...]}) of
//   { "sub", "email", "email_verified": bool, "name", "password" }
let accounts = readJson(accountsFile, 'accounts');
if (!Array.isArray(accounts)) accounts = accounts?.accounts;
if (!Array.isArray(accounts)) die(`${accountsFile}: expected an array of accounts`);
for (const a of accounts) {
  if (typeof a?.sub !== 'string' || !a.sub) die(`${accountsFile}: every account needs a string "sub"`);
  if (typeof a.password !== 'string') die(`${accountsFile}: account ${a.sub} needs a string "password"`);
}
const accountsBySub = new Map(accounts.map((a) => [a.sub, a]));

function findByLogin(login) {
  const l = String(login ?? '').trim().toLowerCase();
  return accounts.find((a) => (a.email && a.email.toLowerCase() === l) || a.sub === login);
}

function accountClaims(a) {
  const out = { sub: a.sub };
  if (a.email !== undefined) out.email = a.email;
  if (a.email_verified !== undefined) out.email_verified = a.email_verified === true;
  if (a.name !== undefined) out.name = a.name;
  return out;
}

// ---------------------------------------------------------------- keys

// One RS256 signing key.  With --jwks FILE the key is read from FILE when it
// exists and written there (private JWKS, mode 0600) when it does not, so a
// restarted provider keeps its key.  Without it a fresh key is made each start.
function makeRsaJwk(kid) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

let jwks;
if (jwksFile && fs.existsSync(jwksFile)) {
  jwks = readJson(jwksFile, 'jwks');
} else {
  jwks = { keys: [makeRsaJwk(`authflow-test-${crypto.randomBytes(4).toString('hex')}`)] };
  if (jwksFile) fs.writeFileSync(jwksFile, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
}
const signingJwk = jwks.keys.find((k) => k.kty === 'RSA' && k.d);
if (!signingJwk) die('the JWKS holds no private RSA key');
const signingKey = crypto.createPrivateKey({ key: signingJwk, format: 'jwk' });
let foreignKey; // made on first use: a key the provider does NOT publish
let foreignKid;

// ---------------------------------------------------------------- JWT helpers

const b64u = (buf) => Buffer.from(buf).toString('base64url');

// sign: "provider" (default; the published key), "foreign" (an unpublished
// RSA key with its own kid), "none" (alg none, empty signature) or "hs256"
// (HMAC-SHA256 with `secret`, e.g. a client_secret, for alg-confusion tests).
function signJwt(header, payload, sign = 'provider', secret = undefined) {
  let h;
  let signer;
  switch (sign) {
    case 'provider':
      h = { alg: 'RS256', typ: 'JWT', kid: signingJwk.kid };
      signer = (input) => crypto.sign('sha256', input, signingKey);
      break;
    case 'foreign':
      if (!foreignKey) {
        foreignKid = `foreign-${crypto.randomBytes(4).toString('hex')}`;
        foreignKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
      }
      h = { alg: 'RS256', typ: 'JWT', kid: foreignKid };
      signer = (input) => crypto.sign('sha256', input, foreignKey);
      break;
    case 'none':
      h = { alg: 'none', typ: 'JWT' };
      signer = () => Buffer.alloc(0);
      break;
    case 'hs256':
      if (typeof secret !== 'string' || !secret) throw new Error('sign "hs256" needs "secret"');
      h = { alg: 'HS256', typ: 'JWT' };
      signer = (input) => crypto.createHmac('sha256', secret).update(input).digest();
      break;
    default:
      throw new Error(`unknown sign mode ${sign}`);
  }
  h = dropNulls({ ...h, ...(header || {}) });
  const input = `${b64u(JSON.stringify(h))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${b64u(signer(Buffer.from(input)))}`;
}

function decodeJwtPayload(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

// merge, then remove keys whose value is null ("null deletes the claim")
function dropNulls(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== null));
}

// ---------------------------------------------------------------- small http helpers

async function readBody(ctx, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > limit) ctx.throw(413, 'body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readForm(ctx) {
  return Object.fromEntries(new URLSearchParams(await readBody(ctx)));
}

async function readJsonBody(ctx) {
  const text = await readBody(ctx);
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch (err) {
    return ctx.throw(400, `body must be a JSON object: ${err.message}`);
  }
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>\n<body>\n<h1>${esc(title)}</h1>\n${body}\n</body></html>\n`;
}

function loginPage(uid, details, error) {
  const { params } = details;
  return page('Sign in (authflow test OpenID provider)', `${error ? `<p id="error" class="error">${esc(error)}</p>\n` : ''}<p>client: <code id="client_id">${esc(params.client_id)}</code>, scope: <code id="scope">${esc(params.scope ?? '')}</code></p>
<form id="login" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Email <input type="text" name="login" value="" autofocus></label>
<label>Password <input type="password" name="password" value=""></label>
<button type="submit">Sign in</button>
</form>
<p><a id="abort" href="/interaction/${esc(uid)}/abort">Cancel (access_denied)</a></p>`);
}

// ---------------------------------------------------------------- provider configuration

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  findAccount(ctx, sub) {
    const a = accountsBySub.get(sub);
    if (!a) return undefined;
    return {
      accountId: a.sub,
      async claims() { return accountClaims(a); },
    };
  },
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put the scope-derived claims (email, email_verified, name) in the ID Token
  // of the code flow too, not only in the userinfo response.
  conformIdTokenClaims: false,
  // PKCE with S256 (the only method enabled) for every client, public or not.
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out?', `${form}\n<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>\n<button type="submit" form="op.logoutForm">No</button>`);
      },
      postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
  },
  interactions: {
    url(ctx, interaction) { return `/interaction/${interaction.uid}`; },
  },
  // Plain http on loopback: no "secure" cookies (ctx.secure is false, so the
  // provider does not add the Secure flag) and SameSite=Lax for both kinds so
  // that a browser would also keep them over http.  Fixed, public test keys.
  cookies: {
    keys: ['authflow-oidc-test-cookie-key-NOT-A-SECRET'],
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 86400,
  },
  renderError(ctx, out) {
    // plain text, easy to grep in tests; no external resources
    ctx.type = 'text/plain';
    ctx.body = Object.entries(out).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
  },
};

// ---------------------------------------------------------------- token-response overrides (test-only)

// Queue of changes applied to the next successful token endpoint responses,
// so a test can make the relying party receive an odd id_token from a real
// code exchange (expired, wrong nonce, wrong aud, bad signature...).
const overrides = [];

async function applyOverride(ctx) {
  if (!overrides.length || ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
  const body = ctx.body;
  const idx = overrides.findIndex((o) => !o.client_id || o.client_id === ctx.oidc?.client?.clientId);
  if (idx === -1) return;
  const o = overrides[idx];
  o.count -= 1;
  if (o.count <= 0) overrides.splice(idx, 1);

  let out = { ...body };
  if (typeof body.id_token === 'string' && (o.id_token_claims || o.id_token_header || o.sign)) {
    const payload = dropNulls({ ...decodeJwtPayload(body.id_token), ...(o.id_token_claims || {}) });
    out.id_token = signJwt(o.id_token_header, payload, o.sign || 'provider', o.secret);
  }
  if (o.omit_id_token) delete out.id_token;
  if (o.response) out = dropNulls({ ...out, ...o.response });
  if (o.status) ctx.status = o.status;
  ctx.body = out;
  log(`test override applied to token response (client ${ctx.oidc?.client?.clientId})`);
}

// ---------------------------------------------------------------- start

const server = http.createServer();
server.keepAliveTimeout = 1000;

server.listen(Number(portArg), HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  let provider;
  try {
    provider = new Provider(issuer, configuration);
  } catch (err) {
    die(`provider configuration: ${err.stack || err}`);
  }
  provider.proxy = false; // no reverse proxy; never trust X-Forwarded-*

  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'introspection.error', 'revocation.error', 'end_session.error', 'jwks.error', 'discovery.error']) {
    provider.on(ev, (ctx, err) => log(`${ev}: ${err?.error || err?.name || ''} ${err?.error_description || err?.message || ''}`));
  }
  provider.on('grant.success', (ctx) => log(`grant.success client=${ctx.oidc?.client?.clientId}`));

  // request log (outermost)
  provider.use(async (ctx, next) => {
    const t0 = Date.now();
    try {
      await next();
    } finally {
      log(`${ctx.method} ${ctx.path} -> ${ctx.status} ${Date.now() - t0}ms`);
    }
  });

  // token endpoint responses: apply queued test overrides
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token') await applyOverride(ctx);
  });

  // interactions (login form, auto-consent) and test-only endpoints; these
  // middlewares run before the provider's own router and answer themselves.
  provider.use(async (ctx, next) => {
    let m;
    if ((m = ctx.path.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/))) {
      const [, uid, action = ''] = m;
      return interaction(provider, ctx, uid, action);
    }
    if (ctx.path.startsWith('/test/')) {
      if (!testEndpoints) return next();
      return testEndpoint(provider, ctx);
    }
    if (ctx.method === 'GET' && ctx.path === '/api/user') return githubStyleUser(provider, ctx);
    return next();
  });

  server.on('request', provider.callback());
  log(`issuer ${issuer}; clients: ${clients.map((c) => c.client_id).join(', ')}; accounts: ${accounts.length}; test endpoints ${testEndpoints ? 'on' : 'off'}`);
  process.stdout.write(`ready ${issuer}\n`);
});

server.on('error', (err) => die(`listen: ${err.message}`));

function shutdown(sig) {
  log(`${sig}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// ---------------------------------------------------------------- interactions

async function grantEverythingRequested(provider, details, accountId) {
  const { params, prompt } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (prompt.name === 'consent') {
    const d = prompt.details || {};
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  } else {
    // at login: grant every requested scope (unknown ones are ignored by the
    // provider) and the claims of a "claims" request parameter, if any
    if (params.scope) grant.addOIDCScope(params.scope);
    if (params.claims) {
      try {
        const c = JSON.parse(params.claims);
        const names = new Set([...Object.keys(c.id_token || {}), ...Object.keys(c.userinfo || {})]);
        if (names.size) grant.addOIDCClaims([...names]);
      } catch { /* the provider rejects a malformed claims parameter itself */ }
    }
  }
  return grant.save();
}

// like provider.interactionFinished(), but through koa so the request log
// shows the real status
async function finish(provider, ctx, result, opts) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, opts);
  ctx.redirect(returnTo);
  ctx.status = 303;
}

async function interaction(provider, ctx, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    ctx.type = 'text/plain';
    ctx.body = `error=invalid_request\nerror_description=${err.message} (is the cookie jar missing?)\n`;
    return;
  }
  if (details.uid !== uid) {
    ctx.status = 400;
    ctx.type = 'text/plain';
    ctx.body = 'error=invalid_request\nerror_description=interaction uid does not match the interaction cookie\n';
    return;
  }
  const { prompt } = details;

  if (action === '/abort') {
    return finish(provider, ctx, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (action === '/login') {
    if (ctx.method !== 'POST') ctx.throw(405);
    if (prompt.name !== 'login') {
      ctx.status = 400;
      ctx.type = 'text/plain';
      ctx.body = `error=invalid_request\nerror_description=interaction is at prompt ${prompt.name}, not login\n`;
      return;
    }
    const form = await readForm(ctx);
    const account = findByLogin(form.login);
    if (!account || account.password !== form.password) {
      log(`login failed for ${JSON.stringify(form.login ?? '')}`);
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(uid, details, 'Invalid email or password.');
      return;
    }
    log(`login ok: ${account.sub} (${account.email ?? ''}) for client ${details.params.client_id}`);
    const grantId = await grantEverythingRequested(provider, details, account.sub);
    return finish(provider, ctx, {
      login: { accountId: account.sub },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  // GET /interaction/:uid
  if (ctx.method !== 'GET') ctx.throw(405);
  if (prompt.name === 'login') {
    ctx.type = 'html';
    ctx.body = loginPage(uid, details);
    return;
  }
  if (prompt.name === 'consent') {
    // already signed in (session cookie) but consent is missing: grant it
    const grantId = await grantEverythingRequested(provider, details, details.session.accountId);
    log(`auto-consent for ${details.session.accountId} / ${details.params.client_id}`);
    return finish(provider, ctx, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  ctx.status = 501;
  ctx.type = 'text/plain';
  ctx.body = `error=server_error\nerror_description=unsupported prompt ${prompt.name}\n`;
}

// ---------------------------------------------------------------- GitHub-style user endpoint

// GET /api/user with "Authorization: Bearer <access token>" (any access token
// issued by this provider, whatever its scope) -> a GitHub-like user object.
async function githubStyleUser(provider, ctx) {
  const m = /^Bearer\s+(\S+)$/i.exec(ctx.get('authorization'));
  const token = m && await provider.AccessToken.find(m[1]);
  const account = token && !token.isExpired && accountsBySub.get(token.accountId);
  ctx.set('Cache-Control', 'no-store');
  if (!account) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
    ctx.body = { message: 'Bad credentials' };
    return;
  }
  ctx.body = {
    id: account.sub,
    login: account.email ? account.email.split('@')[0] : account.sub,
    name: account.name ?? null,
    email: account.email ?? null,
    email_verified: account.email_verified === true,
  };
}

// ---------------------------------------------------------------- test-only endpoints

async function testEndpoint(provider, ctx) {
  ctx.set('Cache-Control', 'no-store');
  const now = Math.floor(Date.now() / 1000);
  try {
    if (ctx.path === '/test/id-token' && ctx.method === 'POST') {
      // body: {"claims": {...}, "header": {...}, "sign": "provider"|"foreign"|"none"|"hs256", "secret": "..."}
      // claims default to iss=<issuer>, iat=now, exp=now+300; a null value removes a claim.
      const b = await readJsonBody(ctx);
      const payload = dropNulls({ iss: provider.issuer, iat: now, exp: now + 300, ...(b.claims || {}) });
      ctx.type = 'application/jwt';
      ctx.body = signJwt(b.header, payload, b.sign || 'provider', b.secret);
      return;
    }
    if (ctx.path === '/test/token-override') {
      if (ctx.method === 'POST') {
        // body: {"id_token_claims": {...}, "id_token_header": {...}, "sign": ..., "secret": ...,
        //        "omit_id_token": bool, "response": {...}, "status": N, "client_id": "...", "count": N}
        const b = await readJsonBody(ctx);
        overrides.push({ ...b, count: Number.isInteger(b.count) && b.count > 0 ? b.count : 1 });
        ctx.body = { queued: overrides.length };
        return;
      }
      if (ctx.method === 'DELETE') {
        overrides.length = 0;
        ctx.body = { queued: 0 };
        return;
      }
      if (ctx.method === 'GET') {
        ctx.body = { queued: overrides.length, overrides };
        return;
      }
    }
    if (ctx.path === '/test/health' && ctx.method === 'GET') {
      ctx.body = { ok: true, issuer: provider.issuer };
      return;
    }
  } catch (err) {
    if (err.status) throw err;
    ctx.status = 400;
    ctx.body = { error: 'invalid_request', error_description: err.message };
    return;
  }
  ctx.status = 404;
  ctx.body = { error: 'not_found' };
}
