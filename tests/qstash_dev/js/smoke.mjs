// Smoke test of qstash_dev with the official JavaScript SDK (@upstash/qstash).
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY.
// Prints "OK <n checks>" on success; exits non-zero with the failure otherwise.
import http from "node:http";
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
const client = new Client({ token: env.QSTASH_TOKEN, baseUrl: env.QSTASH_URL });
const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
});
let checks = 0;
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks += 1;
};

const arrivals = [];
let wake = () => {};
const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    arrivals.push({ path: req.url, headers: req.headers, body });
    const status = req.url.startsWith("/fail") ? 500 : 200;
    res.writeHead(status).end("js");
    wake();
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;
const waitFor = async (path, n = 1) => {
  const deadline = Date.now() + 10000;
  while (arrivals.filter((a) => a.path.startsWith(path)).length < n) {
    if (Date.now() > deadline) throw new Error(`no delivery to ${path}`);
    await new Promise((r) => { wake = r; setTimeout(r, 50); });
  }
  return arrivals.filter((a) => a.path.startsWith(path));
};

try {
  const url = `${base}/js?q=1`;
  const pub = await client.publishJSON({ url, body: { hello: "js" }, headers: { "X-Js": "1" } });
  check(pub.messageId.startsWith("msg_"), "publish returns messageId");
  const [hit] = await waitFor("/js");
  check(hit.headers["x-js"] === "1", "forwarded header");
  check(hit.headers["upstash-message-id"] === pub.messageId, "message id header");
  check(await receiver.verify({ signature: hit.headers["upstash-signature"], body: hit.body, url }),
    "JS Receiver verifies the signature");

  const later = await client.publishJSON({ url: `${base}/later`, body: {}, delay: 300 });
  const msg = await client.messages.get(later.messageId);
  check(msg.messageId === later.messageId && msg.url === `${base}/later`, "messages.get");
  const other = await client.publishJSON({ url: `${base}/later`, body: {}, delay: 300 });
  check((await client.messages.deleteMany([later.messageId, other.messageId])) === 2,
    "bulk cancel via query ids");

  const sched = await client.schedules.create({ destination: `${base}/s`, cron: "* * * * *" });
  await client.schedules.pause({ schedule: sched.scheduleId });
  check((await client.schedules.get(sched.scheduleId)).isPaused === true, "schedule paused");
  await client.schedules.resume({ schedule: sched.scheduleId });
  check((await client.schedules.list()).length === 1, "schedules.list");
  await client.schedules.delete(sched.scheduleId);

  await client.publishJSON({ url: `${base}/fail`, body: {}, retries: 0 });
  await waitFor("/fail");
  let dlq = { messages: [] };
  for (let i = 0; i < 100 && dlq.messages.length === 0; i++) {
    dlq = await client.dlq.listMessages();
    if (dlq.messages.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  check(dlq.messages.length === 1 && dlq.messages[0].responseStatus === 500, "dlq.listMessages");
  const retried = await client.dlq.retry([dlq.messages[0].dlqId]);
  check(retried.responses.length === 1, "dlq.retry");
  await waitFor("/fail", 2);

  const logs = await client.logs({ filter: { messageId: pub.messageId } });
  check(logs.logs.some((l) => l.state === "DELIVERED"), "logs show DELIVERED");
  // The SDK's dev-mode health check: GET /v2/keys with the token.
  const keys = await (await fetch(`${env.QSTASH_URL}/v2/keys`, {
    headers: { Authorization: `Bearer ${env.QSTASH_TOKEN}` },
  })).json();
  check(keys.current === env.QSTASH_CURRENT_SIGNING_KEY, "signing keys");
  console.log(`OK ${checks}`);
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  server.close();
}
