// oauth.mjs logs in to an MCP server with the official TypeScript SDK's
// OAuth client support (an OAuthClientProvider), for oauth_ts_test.go, and
// then runs steps as the logged-in user.
//
// It speaks JSON lines. The first line on stdin is the instructions:
//
//   {"url": "http://127.0.0.1:1234/mcp", "redirectUrl": "http://127.0.0.1:49153/callback",
//    "clientName": "e2e-ts", "timeoutMs": 15000,
//    "steps": [{"op": "callTool", "name": "...", "arguments": {}}, {"op": "expireAccessToken"}, {"op": "listTools"}]}
//
// When the SDK sends the user to authorize, it prints {"authorize": URL} and
// waits for one line {"redirect": URL}: where the user's browser was sent
// back (the test plays the user). At the end it prints {"done": REPORT}:
//
//   {"connect": {"ok": true} | {"ok": false, "error": "..."},
//    "authorizationUrls": [...], "stateMatches": true, "iss": "...", "issuer": "...",
//    "issParameterSupported": true, "clientId": "...", "tokensSaved": 2,
//    "steps": [{"op": "...", "ok": true, "result": {...}} | {"op": "...", "ok": false, "error": "..."}],
//    "httpFailures": [{"method": "POST", "url": "...", "status": 401}]}
//
// The exit code is 0 when the script ran to the end, whatever the server said.

import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function readLine() {
  const { value, done } = await lines.next();
  if (done) throw new Error('stdin closed');
  return JSON.parse(value);
}

function say(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const httpFailures = [];
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) httpFailures.push({ method: init?.method ?? 'GET', url: String(url), status: res.status });
  return res;
}

// MemoryProvider keeps what an MCP client keeps between runs (client
// registration, tokens, PKCE verifier, discovery) in memory, and hands the
// authorization URL to the test, which answers with the redirect.
class MemoryProvider {
  constructor(redirectUrl, clientName) {
    this._redirectUrl = redirectUrl;
    this._clientName = clientName;
    this.authorizationUrls = [];
    this.tokensSaved = 0;
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return {
      redirect_uris: [this._redirectUrl],
      client_name: this._clientName,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() {
    this.lastState = randomBytes(16).toString('hex');
    return this.lastState;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
    this.tokensSaved++;
  }
  async redirectToAuthorization(url) {
    this.authorizationUrls.push(url.href);
    say({ authorize: url.href });
    const answer = await readLine();
    this.redirect = new URL(answer.redirect);
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    return this._verifier;
  }
  saveDiscoveryState(s) {
    this._discovery = s;
  }
  discoveryState() {
    return this._discovery;
  }
}

async function runStep(client, provider, step, opts) {
  switch (step.op) {
    case 'callTool':
      return client.callTool({ name: step.name, arguments: step.arguments ?? {} }, undefined, opts);
    case 'listTools':
      return client.listTools(undefined, opts);
    case 'expireAccessToken':
      // What the server says of an access token past its time: the SDK
      // then refreshes with its refresh token and retries.
      provider._tokens = { ...provider._tokens, access_token: 'expired-' + randomBytes(8).toString('hex') };
      return {};
    default:
      throw new Error(`unknown op ${JSON.stringify(step.op)}`);
  }
}

async function main() {
  const ins = await readLine();
  const opts = { timeout: ins.timeoutMs ?? 15000 };
  const provider = new MemoryProvider(ins.redirectUrl, ins.clientName ?? 'e2e-ts');
  const url = new URL(ins.url);
  const out = { connect: null, steps: [], httpFailures };

  // First attempt: the server answers 401, the SDK discovers, registers and
  // sends the user to authorize; connect then fails with UnauthorizedError.
  let transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recordingFetch });
  let client = new Client({ name: 'e2e-ts-oauth', version: '1.0.0' });
  try {
    await client.connect(transport, opts);
    out.connect = { ok: false, error: 'connected without logging in' };
  } catch (err) {
    if (!(err instanceof UnauthorizedError) || !provider.redirect) {
      out.connect = { ok: false, error: `${err?.name}: ${err?.message}` };
    }
  }
  if (!out.connect) {
    // Back from the browser: the app checks state and the RFC 9207 issuer,
    // then has the SDK redeem the code, and connects again.
    const back = provider.redirect.searchParams;
    const meta = provider._discovery?.authorizationServerMetadata ?? {};
    out.stateMatches = back.get('state') === provider.lastState;
    out.iss = back.get('iss');
    out.issuer = meta.issuer;
    out.issParameterSupported = meta.authorization_response_iss_parameter_supported === true;
    try {
      if (!out.stateMatches) throw new Error('state mismatch');
      if (out.issParameterSupported && out.iss !== out.issuer) throw new Error('iss mismatch');
      const code = back.get('code');
      if (!code) throw new Error(`no code: ${back.get('error')} ${back.get('error_description')}`);
      await transport.finishAuth(code);
      await client.close().catch(() => {});
      transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recordingFetch });
      client = new Client({ name: 'e2e-ts-oauth', version: '1.0.0' });
      await client.connect(transport, opts);
      out.connect = { ok: true };
    } catch (err) {
      out.connect = { ok: false, error: `${err?.name}: ${err?.message}` };
    }
  }
  out.authorizationUrls = provider.authorizationUrls;
  out.clientId = provider._client?.client_id;
  if (out.connect.ok) {
    for (const step of ins.steps ?? []) {
      try {
        out.steps.push({ op: step.op, ok: true, result: await runStep(client, provider, step, opts) });
      } catch (err) {
        out.steps.push({ op: step.op, ok: false, error: `${err?.name}: ${err?.message}` });
      }
    }
  }
  out.tokensSaved = provider.tokensSaved;
  await client.close().catch(() => {});
  say({ done: out });
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`oauth.mjs: ${err?.stack ?? err}\n`);
    process.exit(2);
  },
);
