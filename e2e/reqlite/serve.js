#!/usr/bin/env node
// reqlite (npm, a ReQL server in JavaScript last released in 2016) as a RethinkDB 2.4 peer
// for tests and `make dev`. Its own handshake omits `server_version`, pads the SCRAM salt
// with a second "==" (not base64) and takes any password while signing as if it were empty;
// this replaces the handshake with RFC 7677 SCRAM-SHA-256 against one admin password, so
// a wrong password is refused (error_code 12) as RethinkDB refuses it. Queries are reqlite's.
//   node serve.js --bind 10.244.0.7 [--port 28015] [--admin-password-file F]
// Its other limits (no users, grants or system tables, no clustering) are in
// docs/databases.md.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const net = require("net");

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const bind = option("--bind", "127.0.0.1");
const port = parseInt(option("--port", "28015"), 10);
const passwordFile = option("--admin-password-file");
const adminPassword = () => (passwordFile ? fs.readFileSync(passwordFile, "utf8").trim() : "");

const V1_0 = 0x34c2bdc3;
const ITERATIONS = 4096;
const hmac = (key, data) => crypto.createHmac("sha256", key).update(data).digest();
const sha256 = (data) => crypto.createHash("sha256").update(data).digest();
const reply = (connection, message) =>
  connection.connection.write(Buffer.concat([Buffer.from(JSON.stringify(message)), Buffer.from([0])]));
const refuse = (connection, error, code) => {
  reply(connection, { success: false, error, error_code: code });
  connection.connection.end();
  connection.state = -1;
};
const fields = (message) =>
  Object.fromEntries(message.split(",").map((f) => [f.slice(0, 1), f.slice(2)]));

const Connection = require("reqlite/lib/connection.js");
const queries = Connection.prototype.read;
Connection.prototype.read = function () {
  for (;;) {
    if (this.state < 0) return;
    if (this.state >= 3) return queries.call(this);
    if (this.state === 0) {
      if (this.buffer.length < 4) return;
      const version = this.buffer.readUInt32LE(0);
      this.buffer = this.buffer.slice(4);
      if (version !== V1_0) return refuse(this, "Unsupported protocol version", 1);
      reply(this, {
        success: true,
        min_protocol_version: 0,
        max_protocol_version: 0,
        server_version: "2.4.4 (reqlite 2.3.0)",
      });
      this.state = 1;
      continue;
    }
    const end = this.buffer.indexOf(0);
    if (end < 0) return;
    const message = JSON.parse(this.buffer.slice(0, end).toString());
    this.buffer = this.buffer.slice(end + 1);
    if (this.state === 1) {
      this.clientFirstBare = message.authentication.replace(/^n,,/, "");
      const first = fields(this.clientFirstBare);
      if (first.n !== "admin") return refuse(this, `Unknown user ${first.n}`, 17);
      this.nonce = first.r + crypto.randomBytes(18).toString("base64");
      this.salt = crypto.randomBytes(16);
      this.serverFirst = `r=${this.nonce},s=${this.salt.toString("base64")},i=${ITERATIONS}`;
      reply(this, { success: true, authentication: this.serverFirst });
      this.state = 2;
      continue;
    }
    // state 2: the client's proof.
    const final = fields(message.authentication);
    if (final.r !== this.nonce) return refuse(this, "Wrong nonce", 12);
    const withoutProof = message.authentication.replace(/,p=.*$/, "");
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const salted = crypto.pbkdf2Sync(adminPassword(), this.salt, ITERATIONS, 32, "sha256");
    const storedKey = sha256(hmac(salted, "Client Key"));
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.from(final.p || "", "base64");
    const clientKey = Buffer.from(proof.map((b, i) => b ^ signature[i]));
    if (proof.length !== 32 || !sha256(clientKey).equals(storedKey)) {
      return refuse(this, "Wrong password", 12);
    }
    reply(this, { success: true, authentication: `v=${hmac(hmac(salted, "Server Key"), authMessage).toString("base64")}` });
    this.state = 3;
  }
};

// reqlite listens on every address; bind it to the one asked for.
const createServer = net.createServer;
net.createServer = (...a) => {
  const server = createServer(...a);
  const listen = server.listen.bind(server);
  server.listen = (p, callback) =>
    listen(p, bind, () => {
      process.stdout.write(`reqlite serving ReQL on ${bind}:${p}\n`);
      if (callback) callback();
    });
  server.on("error", (error) => {
    process.stderr.write(`reqlite: ${error.message}\n`);
    process.exit(1);
  });
  return server;
};
const Server = require("reqlite/lib/index.js");
new Server({ "driver-port": port, silent: true });
