// A real OpenID Connect provider for authmw's test suite: panva's certified
// oidc-provider, configured for the client-credentials grant with JWT access
// tokens (resource indicators), listening on 127.0.0.1 only.
//
//   node scripts/oidc/server.mjs    (tests/_services.py starts it; see scripts/oidc/README.md)
//
// Environment:
//   AUTHMW_OIDC_PORT          port on 127.0.0.1 (required)
//   AUTHMW_OIDC_STATE         folder for state.json: the signing keys, kept across restarts (required)
//   AUTHMW_OIDC_ADMIN_SECRET  the X-Admin-Secret the /__admin/ routes require (required)
//   AUTHMW_OIDC_MODULES       node_modules holding oidc-provider [<repo>/.cache/oidc/node_modules]
//
// Admin hook (loopback only, X-Admin-Secret header), for rotation and counting:
//   GET    /__admin/stats                 {"jwks": n, "discovery": n, "token": n} requests served
//   POST   /__admin/stats/reset
//   GET    /__admin/keys                  [{"kid", "alg", "signing"}]
//   POST   /__admin/keys?alg=RS256        publish a new key (not signing yet) -> {"kid"}
//   POST   /__admin/keys/<kid>/sign       sign the tokens of its algorithm with it from now on
//   DELETE /__admin/keys/<kid>            retire it (no longer in the JWKS; not the signing key)
//   POST   /__admin/jwks-fault?mode=M     the JWKS endpoint answers: ok, 500, redirect, huge, garbage
// A key change rebuilds the provider with the new key set, as a redeployment would.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.AUTHMW_OIDC_MODULES || path.join(here, '..', '..', '.cache', 'oidc', 'node_modules');
const port = Number(process.env.AUTHMW_OIDC_PORT);
const stateDir = process.env.AUTHMW_OIDC_STATE;
const adminSecret = process.env.AUTHMW_OIDC_ADMIN_SECRET;
if (!port || !stateDir || !adminSecret) {
  console.error('AUTHMW_OIDC_PORT, AUTHMW_OIDC_STATE and AUTHMW_OIDC_ADMIN_SECRET are required');
  process.exit(2);
}
const entry = path.join(modules, 'oidc-provider', 'lib', 'index.js');
if (!fs.existsSync(entry)) {
  console.error(`${entry} is missing: run bash scripts/oidc/install.sh`);
  process.exit(3);
}
const started = Date.now();
const { default: Provider } = await import(pathToFileURL(entry).href);
console.log(`oidc-provider loaded in ${Date.now() - started} ms`);

const issuer = `http://127.0.0.1:${port}`;
const statePath = path.join(stateDir, 'state.json');

// Clients of the client-credentials grant and the claims their tokens carry.
export const CLIENTS = {
  reader: {
    secret: 'reader-secret-0123456789',
    claims: { roles: ['reader'], realm_access: { roles: ['reader'] }, project_id: 'demo-project', preferred_username: 'reader-bot' },
  },
  admin: {
    secret: 'admin-secret-0123456789',
    claims: {
      roles: ['admin', 'member', 'reader'],
      realm_access: { roles: ['admin'] },
      resource_access: { 'items.api': { roles: ['items-admin'] } },
      project_id: 'demo-project',
      preferred_username: 'admin-bot',
      groups: ['ops', 'dev'],
    },
  },
  weird: {
    secret: 'weird-secret-0123456789',
    claims: { roles: ['member,admin', ' admin', 'reader'], project_id: 'demo-project' },
  },
};

// Resource servers (audiences) and how their access tokens are signed.
const RESOURCES = {
  'https://api.example/rs': 'RS256',
  'https://api.example/es': 'ES256',
  'https://api.example/ed': 'EdDSA',
  'https://api.example/ps': 'PS256',
  'https://other.example/': 'RS256',
};

function newKey(alg) {
  let pair;
  if (alg === 'RS256' || alg === 'PS256') pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'EdDSA') pair = crypto.generateKeyPairSync('ed25519');
  else throw new Error(`unsupported alg ${alg}`);
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg, use: 'sig' };
}

function loadState() {
  if (fs.existsSync(statePath)) return JSON.parse(fs.readFileSync(statePath, 'utf8'));
  const keys = ['RS256', 'ES256', 'EdDSA', 'PS256'].map(newKey);
  const signing = Object.fromEntries(keys.map((k) => [k.alg, k.kid]));
  return { keys, signing };
}

function saveState() {
  const tmp = `${statePath}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, statePath);
}

const state = loadState();
saveState();
console.log(`keys ready at ${Date.now() - started} ms`);

function build() {
  const provider = new Provider(issuer, {
    clients: Object.entries(CLIENTS).map(([id, c]) => ({
      client_id: id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: state.keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://api.example/rs',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const alg = RESOURCES[resource];
          if (!alg) throw new Provider.errors.InvalidTarget();
          return {
            scope: 'items:read items:write',
            audience: resource,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg, kid: state.signing[alg] } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => CLIENTS[token.clientId]?.claims,
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'] },
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider.callback();
}

let handler = build();
const stats = { jwks: 0, discovery: 0, token: 0 };
let jwksFault = 'ok';

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function admin(req, res, url) {
  const given = Buffer.from(String(req.headers['x-admin-secret'] || ''));
  const wanted = Buffer.from(adminSecret);
  if (given.length !== wanted.length || !crypto.timingSafeEqual(given, wanted)) return send(res, 403, { error: 'forbidden' });
  const parts = url.pathname.split('/').filter(Boolean); // ['__admin', ...]
  const route = `${req.method} /${parts.slice(1).join('/')}`;
  if (route === 'GET /stats') return send(res, 200, stats);
  if (route === 'POST /stats/reset') {
    stats.jwks = 0; stats.discovery = 0; stats.token = 0;
    return send(res, 200, stats);
  }
  if (route === 'GET /keys') {
    return send(res, 200, state.keys.map((k) => ({ kid: k.kid, alg: k.alg, signing: state.signing[k.alg] === k.kid })));
  }
  if (route === 'POST /keys') {
    const key = newKey(url.searchParams.get('alg') || 'RS256');
    state.keys.push(key);
    saveState();
    handler = build();
    return send(res, 200, { kid: key.kid });
  }
  if (req.method === 'POST' && parts[1] === 'keys' && parts[3] === 'sign' && parts.length === 4) {
    const key = state.keys.find((k) => k.kid === parts[2]);
    if (!key) return send(res, 404, { error: 'no such key' });
    state.signing[key.alg] = key.kid;
    saveState();
    handler = build();
    return send(res, 200, { kid: key.kid, alg: key.alg });
  }
  if (req.method === 'DELETE' && parts[1] === 'keys' && parts.length === 3) {
    const key = state.keys.find((k) => k.kid === parts[2]);
    if (!key) return send(res, 404, { error: 'no such key' });
    if (state.signing[key.alg] === key.kid) return send(res, 409, { error: 'the signing key cannot be retired' });
    state.keys = state.keys.filter((k) => k.kid !== key.kid);
    saveState();
    handler = build();
    return send(res, 200, { retired: key.kid });
  }
  if (route === 'POST /jwks-fault') {
    const mode = url.searchParams.get('mode') || 'ok';
    if (!['ok', '500', 'redirect', 'huge', 'garbage'].includes(mode)) return send(res, 400, { error: 'mode' });
    jwksFault = mode;
    return send(res, 200, { mode });
  }
  return send(res, 404, { error: 'no such admin route' });
}

function jwksFaultAnswer(res) {
  if (jwksFault === '500') return send(res, 500, { error: 'server_error' });
  if (jwksFault === 'redirect') return send(res, 302, '', { location: `${issuer}/jwks` });
  if (jwksFault === 'garbage') return send(res, 200, 'this is not JSON {');
  // huge: a valid-looking JSON document of 2 MiB
  return send(res, 200, { keys: [], padding: 'x'.repeat(2 * 1024 * 1024) });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/__admin/')) return admin(req, res, url);
  if (url.pathname === '/jwks') {
    stats.jwks += 1;
    if (jwksFault !== 'ok') return jwksFaultAnswer(res);
  } else if (url.pathname === '/.well-known/openid-configuration') {
    stats.discovery += 1;
  } else if (url.pathname === '/token') {
    stats.token += 1;
  }
  return handler(req, res);
});
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
