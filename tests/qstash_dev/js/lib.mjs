// Shared harness for the scripts that drive qstash_dev with the official JavaScript SDK.
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY.
// A script calls run(name, async () => {...}); it prints "OK <checks>" or fails with exit 1.
import http from "node:http";
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
export const client = new Client({ token: env.QSTASH_TOKEN, baseUrl: env.QSTASH_URL });
export const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
});

let checks = 0;

/** Count a check that must hold. */
export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks += 1;
}

/**
 * A call the server must refuse with HTTP `status`; `text` (optional) must occur in the error.
 */
export async function refused(promise, status, what, text) {
  try {
    await promise;
  } catch (err) {
    check(err.status === status, `${what}: status ${err.status} is ${status} (${err})`);
    check(!text || String(err).includes(text), `${what}: ${err} mentions ${text}`);
    return;
  }
  throw new Error(`check failed: ${what} should have been refused`);
}

/** A promise that must reject, whatever the reason (e.g. a signature check). */
export async function rejects(promise, what) {
  const failed = await promise.then(
    () => false,
    () => true,
  );
  check(failed, `${what} should have been refused`);
}

/** Poll `probe` until it returns something truthy (10 s budget); return that. */
export async function eventually(probe, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The DLQ entries `filter` matches, once there are `n` of them. */
export async function deadLetters(filter, n) {
  return await eventually(async () => {
    const { messages } = await client.dlq.listMessages({ filter });
    return messages.length === n && messages;
  }, `${n} DLQ entries for ${JSON.stringify(filter)}`);
}

/**
 * A local destination on 127.0.0.1 that records every delivery and verifies its signature with
 * the SDK's Receiver. `respond(path, ...statuses)` answers in turn (the last one repeats);
 * `slow(path, ms)` answers late. Everything else gets 200.
 */
export class Destination {
  static async start(host = "127.0.0.1") {
    const dest = new Destination();
    await new Promise((r) => dest.server.listen(0, host, r));
    dest.base = `http://${host}:${dest.server.address().port}`;
    return dest;
  }

  constructor() {
    this.deliveries = [];
    this.replies = new Map();
    this.delays = new Map();
    this.server = http.createServer((req, res) => this.#handle(req, res));
  }

  url(path) {
    return this.base + path;
  }

  respond(path, ...statuses) {
    this.replies.set(path, statuses);
  }

  slow(path, ms) {
    this.delays.set(path, ms);
  }

  at(path) {
    return this.deliveries.filter((d) => d.path === path);
  }

  async waitFor(path, n = 1) {
    return await eventually(() => this.at(path).length >= n && this.at(path), `${n} at ${path}`);
  }

  #handle(req, res) {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", async () => {
      const path = req.url.split("?")[0];
      const started = Date.now();
      const verified = await receiver
        .verify({ signature: req.headers["upstash-signature"], body, url: this.base + req.url })
        .catch(() => false);
      await new Promise((r) => setTimeout(r, this.delays.get(path) ?? 0));
      const queue = this.replies.get(path) ?? [200];
      const status = queue.length > 1 ? queue.shift() : queue[0];
      const ended = Date.now();
      this.deliveries.push({ path, headers: req.headers, body, verified, started, ended });
      res.writeHead(status).end(status < 300 ? "ok" : "nope");
    });
  }

  close() {
    this.server.closeAllConnections();
    this.server.close();
  }
}

/** Run a script's checks; every delivery any destination got must have verified. */
export async function run(name, body, destinations = []) {
  try {
    await body();
    for (const dest of destinations) {
      const bad = dest.deliveries.filter((d) => !d.verified).map((d) => d.path);
      check(bad.length === 0, `every delivery verifies with Receiver (not: ${bad})`);
    }
    console.log(`OK ${checks} checks (${name})`);
  } catch (err) {
    console.error(`${name}: ${err.stack ?? err}`);
    process.exitCode = 1;
  } finally {
    for (const dest of destinations) dest.close();
  }
}
