// The authorization server popsync's OAuth2 tests sign in with: node-oidc-provider (an
// OpenID-certified implementation), on a random loopback port, with
//
// - a native client for popsync (no secret, PKCE with S256 required, the loopback redirect
//   http://127.0.0.1/ on any port, authorization code, refresh token and device
//   grants);
// - a confidential client for Dovecot, which checks every access token popsync presents at
//   the token introspection endpoint (RFC 7662);
// - refresh tokens rotated at every use, access tokens that expire after ACCESS_TTL seconds;
// - the development log-in and consent pages, which the tests fill in as a user would
//   (any log-in name is an account, whose `sub` is that name);
// - the device authorization grant (RFC 8628), with the polling interval and `slow_down`
//   that node-oidc-provider leaves to the deployment added here in front of it.
//
// Usage: node provider.mjs   (settings from the environment, see below)
// Prints one line, {"issuer": "http://127.0.0.1:PORT"}, once it is listening. Then, for a
// test of an authorization server that cannot be reached, it reads lines on standard input:
// "close" stops listening and drops every connection (printing "closed"), "open" listens on
// the same port again (printing "open").

import http from 'node:http';

import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const ACCESS_TTL = Number(env('OIDC_ACCESS_TTL', '60'));
const DEVICE_INTERVAL = Number(env('OIDC_DEVICE_INTERVAL', '1'));
// Answer the second poll of each device code with slow_down, as a busy server may.
const SLOW_DOWN_SECOND = env('OIDC_SLOW_DOWN_SECOND', '') === '1';
const CLIENT_ID = env('OIDC_CLIENT_ID', 'popsync-test');
const DOVECOT_ID = env('OIDC_DOVECOT_ID', 'dovecot');
const DOVECOT_SECRET = env('OIDC_DOVECOT_SECRET', 'dovecot-introspection-secret');
// Where every secret the server issues or receives is written, one per line ("KIND VALUE"),
// for the test
// that looks for them in everything popsync leaves: access, refresh and device tokens,
// authorization codes, and the PKCE verifiers sent with them.
const SECRETS_LOG = env('OIDC_SECRETS_LOG', '');

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/'],
      grant_types: [
        'authorization_code',
        'refresh_token',
        'urn:ietf:params:oauth:grant-type:device_code',
      ],
      response_types: ['code'],
    },
    {
      client_id: DOVECOT_ID,
      client_secret: DOVECOT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  scopes: ['openid', 'offline_access', 'pop'],
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  // A refresh token for every grant of the native client, not only with offline_access.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TTL,
    AuthorizationCode: 120,
    DeviceCode: 600,
    Grant: 86400,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  // Tokens in memory only: the server lives as long as one test.
});

// The device grant's polling interval (RFC 8628 section 3.2) and `slow_down` (section 3.5):
// a client polling sooner than the interval is told to slow down, and the interval for that
// device code grows by 5 seconds.
const polls = new Map(); // device_code -> { last: ms, interval: s }
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token') {
    const body = await readForm(ctx);
    for (const field of ['code_verifier', 'code', 'refresh_token', 'device_code']) {
      if (body.get(field)) secret(field, body.get(field));
    }
    if (body.get('grant_type') === 'urn:ietf:params:oauth:grant-type:device_code') {
      const code = body.get('device_code') ?? '';
      const now = Date.now();
      const seen = polls.get(code) ?? { last: 0, interval: DEVICE_INTERVAL, count: 0 };
      seen.count += 1;
      if ((seen.count === 2 && SLOW_DOWN_SECOND) || (seen.last && now - seen.last < seen.interval * 1000)) {
        seen.interval += 5;
        seen.last = now;
        polls.set(code, seen);
        ctx.status = 400;
        ctx.body = { error: 'slow_down', error_description: 'polling too fast' };
        return;
      }
      seen.last = now;
      polls.set(code, seen);
    }
  }
  await next();
  if (ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.status === 200) {
    ctx.body = { ...ctx.body, interval: DEVICE_INTERVAL };
  }
});

// The body is read once here and handed on to the provider's own parser.
async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const raw = Buffer.concat(chunks);
  const { Readable } = await import('node:stream');
  const replay = Readable.from([raw]);
  replay.headers = ctx.req.headers;
  replay.method = ctx.req.method;
  replay.url = ctx.req.url;
  ctx.req = Object.assign(replay, { headers: ctx.req.headers });
  return new URLSearchParams(raw.toString('utf8'));
}

import { appendFileSync } from 'node:fs';
function secret(kind, value) {
  if (SECRETS_LOG) appendFileSync(SECRETS_LOG, `${kind} ${value}\n`);
}
for (const event of ['access_token.saved', 'refresh_token.saved', 'authorization_code.saved', 'device_code.saved']) {
  provider.on(event, (token) => secret(event.split('.')[0], token.jti));
}

// Why a grant was refused, for a test that fails (on standard error).
provider.on('grant.error', (ctx, err) => {
  process.stderr.write(`grant refused: ${err.error}: ${err.error_detail ?? err.error_description}\n`);
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

const port = server.address().port;
const { createInterface } = await import('node:readline');
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'close') {
    server.close();
    server.closeAllConnections();
    process.stdout.write('closed\n');
  } else if (line === 'open') {
    server.listen(port, '127.0.0.1', () => process.stdout.write('open\n'));
  }
});
