// client.mjs drives an MCP server with the official TypeScript SDK
// (@modelcontextprotocol/sdk) over Streamable HTTP, for typescript_test.go.
//
// Instructions are one JSON object, from the first argument or, without one,
// from stdin (keeping the token off the command line):
//
//   {
//     "url": "http://127.0.0.1:1234/mcp",
//     "token": "eyJ...",            // sent as "Authorization: Bearer ..."; optional
//     "timeoutMs": 15000,           // per request; optional
//     "steps": [
//       {"op": "listTools"},
//       {"op": "callTool", "name": "read_critical_data", "arguments": {"query": "q"}},
//       {"op": "listResources"}, {"op": "listResourceTemplates"},
//       {"op": "readResource", "uri": "data://server-info"},
//       {"op": "listPrompts"},
//       {"op": "getPrompt", "name": "summarize_access", "arguments": {"focus": "x"}},
//       {"op": "ping"}, {"op": "terminateSession"}
//     ]
//   }
//
// It prints ONE JSON object on stdout:
//
//   {
//     "connect": {"ok": true, "serverInfo": {...}, "protocolVersion": "...", "sessionId": "..."}
//              | {"ok": false, "error": ERROR},
//     "steps": [{"op": "...", "ok": true, "result": {...}} | {"op": "...", "ok": false, "error": ERROR}],
//     "httpFailures": [{"method": "POST", "status": 401, "wwwAuthenticate": "Bearer ..."}],
//     "transportErrors": ["..."]
//   }
//
// where ERROR is
//   {"kind": "jsonrpc", "code": -32030, "message": "access denied: ...", "data": {...}}  (a JSON-RPC error response)
//   {"kind": "http", "status": 401, "message": "...", "wwwAuthenticate": "..."}           (a failed HTTP exchange)
//   {"kind": "unauthorized" | "other", "name": "...", "message": "..."}
//
// Steps are not run when connecting fails. The exit code is 0 when the
// script ran to the end (whatever the server answered), non-zero on a crash
// or on unusable instructions.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

async function readInstructions() {
  if (process.argv[2]) return JSON.parse(process.argv[2]);
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const httpFailures = [];
const transportErrors = [];

// recordingFetch notes every HTTP exchange that did not succeed, with its
// challenge: the SDK's own errors carry the status but not the headers.
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) {
    const f = { method: init?.method ?? 'GET', status: res.status };
    const ch = res.headers.get('www-authenticate');
    if (ch) f.wwwAuthenticate = ch;
    httpFailures.push(f);
  }
  return res;
}

function describe(err) {
  if (err instanceof McpError) {
    // McpError prefixes the server's message with "MCP error <code>: ".
    const prefix = `MCP error ${err.code}: `;
    const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    const out = { kind: 'jsonrpc', code: err.code, message };
    if (err.data !== undefined) out.data = err.data;
    return out;
  }
  if (err instanceof StreamableHTTPError) {
    // Its code is the HTTP status (-1 for an unexpected content type).
    const out = { kind: 'http', status: err.code, message: err.message };
    const last = httpFailures.at(-1);
    if (last && last.status === err.code && last.wwwAuthenticate) out.wwwAuthenticate = last.wwwAuthenticate;
    return out;
  }
  if (err instanceof UnauthorizedError) {
    return { kind: 'unauthorized', name: err.name, message: err.message };
  }
  const out = { kind: 'other', name: err?.name ?? typeof err, message: err?.message ?? String(err) };
  if (err?.code !== undefined) out.code = err.code;
  if (err?.cause) out.cause = String(err.cause?.message ?? err.cause);
  return out;
}

async function runStep(client, transport, step, opts) {
  switch (step.op) {
    case 'listTools':
      return client.listTools(step.params, opts);
    case 'callTool':
      return client.callTool({ name: step.name, arguments: step.arguments ?? {} }, undefined, opts);
    case 'listResources':
      return client.listResources(step.params, opts);
    case 'listResourceTemplates':
      return client.listResourceTemplates(step.params, opts);
    case 'readResource':
      return client.readResource({ uri: step.uri }, opts);
    case 'listPrompts':
      return client.listPrompts(step.params, opts);
    case 'getPrompt':
      return client.getPrompt({ name: step.name, arguments: step.arguments ?? {} }, opts);
    case 'ping':
      return client.ping(opts);
    case 'terminateSession':
      await transport.terminateSession();
      return {};
    default:
      throw new Error(`unknown op ${JSON.stringify(step.op)}`);
  }
}

async function main() {
  const ins = await readInstructions();
  if (!ins || typeof ins.url !== 'string') throw new Error('instructions need a "url"');
  const steps = Array.isArray(ins.steps) ? ins.steps : [];
  const opts = { timeout: ins.timeoutMs ?? 15000 };

  const headers = {};
  if (ins.token) headers.Authorization = `Bearer ${ins.token}`;
  const transport = new StreamableHTTPClientTransport(new URL(ins.url), {
    requestInit: { headers },
    fetch: recordingFetch,
  });
  const client = new Client({ name: 'e2e-ts', version: '1.0.0' });
  client.onerror = (err) => transportErrors.push(String(err?.message ?? err));

  const out = { connect: null, steps: [], httpFailures, transportErrors };
  try {
    await client.connect(transport, opts);
    out.connect = {
      ok: true,
      serverInfo: client.getServerVersion(),
      protocolVersion: transport.protocolVersion ?? null,
      sessionId: transport.sessionId ?? null,
    };
  } catch (err) {
    out.connect = { ok: false, error: describe(err) };
  }

  if (out.connect.ok) {
    for (const step of steps) {
      try {
        const result = await runStep(client, transport, step, opts);
        out.steps.push({ op: step.op, ok: true, result });
      } catch (err) {
        out.steps.push({ op: step.op, ok: false, error: describe(err) });
      }
    }
  }
  await client.close().catch((err) => transportErrors.push(`close: ${err?.message ?? err}`));
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`client.mjs: ${err?.stack ?? err}\n`);
    process.exit(2);
  },
);
