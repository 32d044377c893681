// A minimal SMTP server on loopback that keeps every message in memory, and an HTTP endpoint
// listing them (GET / → [{to: [addresses], raw}]), so the suite can read servauth's reset and
// verification links. Plain SMTP only (no STARTTLS offered): servauth's SERVAUTH_SMTP_URL is
// smtp://127.0.0.1:<SMTP_PORT>.
//
//   SMTP_PORT=2525 HTTP_PORT=2580 node tests/better-auth/mailbox.mjs
import { createServer as createTcpServer } from "node:net";
import { createServer as createHttpServer } from "node:http";

const HOST = "127.0.0.1";
const SMTP_PORT = Number(process.env.SMTP_PORT ?? 2525);
const HTTP_PORT = Number(process.env.HTTP_PORT ?? 2580);
const messages = [];

const smtp = createTcpServer((socket) => {
  let buffer = "";
  let inData = false;
  let data = [];
  let to = [];
  const reply = (line) => socket.write(`${line}\r\n`);
  reply("220 mailbox ESMTP ready");
  socket.on("data", (chunk) => {
    buffer += chunk.toString("latin1");
    let i;
    while ((i = buffer.indexOf("\r\n")) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 2);
      if (inData) {
        if (line === ".") {
          inData = false;
          const raw = Buffer.from(data.join("\r\n"), "latin1").toString("utf8");
          messages.push({ to, raw, at: new Date().toISOString() });
          data = [];
          to = [];
          reply("250 OK queued");
        } else {
          data.push(line.startsWith("..") ? line.slice(1) : line);
        }
        continue;
      }
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === "EHLO") reply("250-mailbox\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760");
      else if (verb === "HELO") reply("250 mailbox");
      else if (verb === "MAIL") { to = []; reply("250 OK"); }
      else if (verb === "RCPT") {
        const address = line.match(/<([^>]*)>/)?.[1] ?? line.slice(8).trim();
        to.push(address.toLowerCase());
        reply("250 OK");
      } else if (verb === "DATA") { inData = true; reply("354 End data with <CR><LF>.<CR><LF>"); }
      else if (verb === "RSET") { to = []; data = []; reply("250 OK"); }
      else if (verb === "NOOP") reply("250 OK");
      else if (verb === "QUIT") { reply("221 Bye"); socket.end(); }
      else reply("502 Command not implemented");
    }
  });
  socket.on("error", () => {});
});

const http = createHttpServer((req, res) => {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(messages));
});

smtp.listen(SMTP_PORT, HOST, () => {
  http.listen(HTTP_PORT, HOST, () => console.log(`mailbox: smtp://${HOST}:${SMTP_PORT}, http://${HOST}:${HTTP_PORT}/`));
});
const stop = () => { smtp.close(); http.close(() => process.exit(0)); setTimeout(() => process.exit(0), 500).unref(); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
