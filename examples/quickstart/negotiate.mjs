// The application side of the serverless flow, like an Azure Function with the
// SignalRConnectionInfo binding: POST /api/negotiate answers {url, accessToken}.
// Usage: SWITCHBOARD_CONNECTION_STRING='Endpoint=...;AccessKey=...;Version=1.0;' node negotiate.mjs
import http from "node:http";
import crypto from "node:crypto";

const cs = Object.fromEntries(
  (process.env.SWITCHBOARD_CONNECTION_STRING ?? "")
    .split(";").filter((p) => p.includes("="))
    .map((p) => [p.slice(0, p.indexOf("=")).trim().toLowerCase(), p.slice(p.indexOf("=") + 1).trim()]),
);
if (!cs.endpoint || !cs.accesskey) {
  console.error("set SWITCHBOARD_CONNECTION_STRING to the string `switchboard serve` printed");
  process.exit(64);
}
const endpoint = cs.endpoint.replace(/\/$/, "");
const hub = "chat";
const port = Number(process.env.PORT ?? 7071);

function sign(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  // The access key is used as its raw UTF-8 bytes, as every Azure SDK does.
  const signature = crypto.createHmac("sha256", cs.accesskey).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

http.createServer((req, res) => {
  const cors = { "Access-Control-Allow-Origin": req.headers.origin ?? "*", "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Headers": "x-requested-with, x-signalr-user-agent, authorization, content-type" };
  if (req.method === "OPTIONS") return res.writeHead(204, cors).end();
  if (req.method !== "POST" || !req.url.startsWith("/api/negotiate")) return res.writeHead(404, cors).end();
  const url = `${endpoint}/client/?hub=${hub}`;
  const now = Math.floor(Date.now() / 1000);
  const user = req.headers["x-ms-client-principal-id"]; // set by App Service Authentication
  const claims = { aud: url, iat: now, nbf: now, exp: now + 3600, ...(user ? { "asrs.s.uid": user } : {}) };
  res.writeHead(200, { ...cors, "Content-Type": "application/json" });
  res.end(JSON.stringify({ url, accessToken: sign(claims) }));
}).listen(port, "127.0.0.1", () => console.log(`negotiate endpoint: http://127.0.0.1:${port}/api/negotiate`));
