// A real Better Auth server on a real database, for import.sh (the end-to-end test of
// `servauth import better-auth`): users sign up and in here through the unmodified client,
// then the server stops and servauth imports its database. Configured like
// reference-server.mjs (email + password, rate limit off, telemetry off, origin checks on:
// NODE_ENV must not be "test"), plus bearer() so that a session's set-auth-token can be kept.
// The schema is made at start with Better Auth's programmatic migration
// (`getMigrations(auth.options).runMigrations()` from "better-auth/db/migration").
//
//   PORT=4001 BA_DATABASE=postgres://postgres@127.0.0.1:5432/ba_x node tests/better-auth/import-server.mjs
//   PORT=4001 BA_DATABASE=/tmp/x/better-auth.db node tests/better-auth/import-server.mjs
//
// Env: HOST (127.0.0.1), PORT (3999), BETTER_AUTH_URL (http://HOST:PORT), BETTER_AUTH_SECRET
// (default: the fixed test secret of helpers.mjs), BA_DATABASE (required): a postgres:// (or
// postgresql://) URL, served through `pg` (a Pool), or a SQLite file path (also sqlite://path
// or sqlite:path), served through `better-sqlite3`.
import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { bearer } from "better-auth/plugins";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";

// Kept equal to DEFAULT_SECRET in helpers.mjs (this file imports no test code).
const DEFAULT_SECRET = "servauth-better-auth-tests-fixed-secret-0123456789";

if (process.env.NODE_ENV === "test") {
  console.error("import-server: NODE_ENV=test turns Better Auth's origin checks off; unset it");
  process.exit(2);
}
const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? 3999);
const baseURL = process.env.BETTER_AUTH_URL ?? `http://${HOST}:${PORT}`;
const secret = process.env.BETTER_AUTH_SECRET ?? DEFAULT_SECRET;
const source = process.env.BA_DATABASE;
if (!source) {
  console.error("import-server: BA_DATABASE must be a postgres:// URL or a SQLite file path");
  process.exit(2);
}

let database;
let closeDatabase;
let kind;
if (/^postgres(ql)?:\/\//.test(source)) {
  const { default: pg } = await import("pg");
  const pool = new pg.Pool({ connectionString: source, max: 5 });
  database = pool;
  closeDatabase = () => pool.end();
  kind = "postgres";
} else {
  const { default: Database } = await import("better-sqlite3");
  const file = source.replace(/^sqlite:(\/\/)?/, "");
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  database = db;
  closeDatabase = async () => db.close();
  kind = "sqlite";
}

export const auth = betterAuth({
  baseURL,
  secret,
  database,
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  plugins: [bearer()],
});

const { toBeCreated, toBeAdded, runMigrations } = await getMigrations(auth.options);
await runMigrations();
console.log(
  `import-server: ${kind} schema ready (created [${toBeCreated.map((t) => t.table).join(", ")}], ` +
    `added fields to [${toBeAdded.map((t) => t.table).join(", ")}])`,
);

const handler = toNodeHandler(auth);
const server = createServer((req, res) => {
  if (req.url === "/api/auth" || req.url.startsWith("/api/auth/") || req.url.startsWith("/api/auth?")) {
    handler(req, res);
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(PORT, HOST, () => {
  console.log(`import-server: better-auth on ${baseURL}/api/auth, ${kind} database`);
});
// Stops cleanly: the SQLite file is checkpointed and closed (its WAL folded in), the pool ended,
// so that the importer reads a quiet database.
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  server.closeAllConnections?.();
  server.close(async () => {
    try {
      if (kind === "sqlite") database.pragma("wal_checkpoint(TRUNCATE)");
      await closeDatabase();
    } finally {
      process.exit(0);
    }
  });
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
