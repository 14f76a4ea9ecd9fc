// Loopback reverse proxy that adds `Authorization: Bearer <key>` to every request.
//
// Why: the conformance suite (@modelcontextprotocol/conformance 0.1.x) takes only `--url`
// for server scenarios and has no way to send a header (upstream issue
// modelcontextprotocol/conformance#453), while every POST to gengate's /api/mcp needs an
// API key. Putting the suite behind this proxy tests the real, authenticated endpoint
// without weakening the server.
//
// The proxy is transparent otherwise: method, path, body and headers pass through
// unchanged and responses (including SSE streams) are piped back as they arrive. A Host or
// Origin that names the proxy's own loopback address is rewritten to the upstream's port,
// so the server sees what a direct client would send; any other Host/Origin (the
// dns-rebinding scenario's `evil.example.com`) is forwarded verbatim, so the server's
// DNS-rebinding protection is what answers it.
//
// Usage: GENGATE_MCP_KEY=... node auth-proxy.mjs <upstream-port>
// Listens on an ephemeral 127.0.0.1 port and prints `listening <port>` once ready.

import http from "node:http";

const upstreamPort = Number(process.argv[2]);
const key = process.env.GENGATE_MCP_KEY;
if (!upstreamPort || !key) {
  console.error("usage: GENGATE_MCP_KEY=... node auth-proxy.mjs <upstream-port>");
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true });
let ownPort = 0;

function rewriteHost(value) {
  // 127.0.0.1:<own> / localhost:<own> / [::1]:<own>  ->  same host, upstream port
  const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$/i.exec(value ?? "");
  return m && Number(m[2]) === ownPort ? `${m[1]}:${upstreamPort}` : value;
}

function rewriteOrigin(value) {
  const m = /^(https?:\/\/)(.*)$/i.exec(value ?? "");
  return m ? m[1] + rewriteHost(m[2]) : value;
}

const server = http.createServer((req, res) => {
  const headers = { ...req.headers };
  if (headers.host) headers.host = rewriteHost(headers.host);
  if (headers.origin) headers.origin = rewriteOrigin(headers.origin);
  if (!headers.authorization) headers.authorization = `Bearer ${key}`;

  const upstream = http.request(
    { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers, agent },
    (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders);
      res.flushHeaders();
      upRes.pipe(res);
      res.on("close", () => upRes.destroy());
    },
  );
  upstream.on("error", (err) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`auth-proxy: upstream error: ${err.message}\n`);
    } else {
      res.destroy(err);
    }
  });
  req.pipe(upstream);
  req.on("aborted", () => upstream.destroy());
});

server.listen(0, "127.0.0.1", () => {
  ownPort = server.address().port;
  console.log(`listening ${ownPort}`);
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
