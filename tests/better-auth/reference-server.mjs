// A real Better Auth server (better-auth from this directory's package.json, in memory) for the
// client suite to run against, configured like the one the wire spec was captured from:
// email + password, bearer() and jwt(), delete-user and change-email on, reset and
// verification mails recorded (GET /__test/mail lists them), rate limiting off, origin checks
// on (NODE_ENV must not be "test": Better Auth turns the origin checks off under it).
//
//   PORT=3999 BETTER_AUTH_SECRET=… node tests/better-auth/reference-server.mjs
//
// Env: HOST (127.0.0.1), PORT (3999), BETTER_AUTH_URL (http://HOST:PORT, the baseURL and the
// trusted origin), BETTER_AUTH_SECRET (default: the fixed test secret of helpers.mjs).
import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { bearer, jwt } from "better-auth/plugins";
import { toNodeHandler } from "better-auth/node";

// Kept equal to DEFAULT_SECRET in helpers.mjs (this file imports no test code).
const DEFAULT_SECRET = "servauth-better-auth-tests-fixed-secret-0123456789";

if (process.env.NODE_ENV === "test") {
  console.error("reference-server: NODE_ENV=test turns Better Auth's origin checks off; unset it");
  process.exit(2);
}
const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? 3999);
const baseURL = process.env.BETTER_AUTH_URL ?? `http://${HOST}:${PORT}`;
const secret = process.env.BETTER_AUTH_SECRET ?? DEFAULT_SECRET;

const mail = [];
const record = (kind) => async ({ user, url, token }) => {
  mail.push({ kind, to: [user.email], text: `${url}\n`, url, token, at: new Date().toISOString() });
};

const db = { user: [], session: [], account: [], verification: [], jwks: [] };

export const auth = betterAuth({
  baseURL,
  secret,
  database: memoryAdapter(db),
  emailAndPassword: {
    enabled: true,
    sendResetPassword: record("reset-password"),
  },
  emailVerification: {
    sendVerificationEmail: record("verify-email"),
  },
  user: {
    deleteUser: { enabled: true },
    changeEmail: { enabled: true },
  },
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  plugins: [bearer(), jwt()],
});

const handler = toNodeHandler(auth);
const server = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/__test/mail") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(mail));
    return;
  }
  if (req.url === "/api/auth" || req.url.startsWith("/api/auth/") || req.url.startsWith("/api/auth?")) {
    handler(req, res);
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(PORT, HOST, () => {
  console.log(`better-auth reference server on ${baseURL}/api/auth (NODE_ENV=${process.env.NODE_ENV ?? ""})`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
