// Client publish, publishJSON, batch, batchJSON, deduplication, callbacks and signatures.
import { Destination, check, client, eventually, receiver, refused, rejects, run } from "./lib.mjs";

const dest = await Destination.start();

await run(
  "publish",
  async () => {
    const url = dest.url("/json?q=1");
    const pub = await client.publishJSON({ url, body: { hello: "js" }, headers: { "X-Js": "1" } });
    check(pub.messageId.startsWith("msg_"), "publishJSON answers a messageId");
    const [hit] = await dest.waitFor("/json");
    check(hit.headers["x-js"] === "1", "a header given to publish is forwarded");
    check(hit.headers["upstash-message-id"] === pub.messageId, "Upstash-Message-Id is the id");
    check(hit.headers["content-type"] === "application/json", "publishJSON sets the content type");
    check(JSON.parse(hit.body).hello === "js", "the body arrives unchanged");
    const sig = hit.headers["upstash-signature"];
    check(await receiver.verify({ signature: sig, body: hit.body, url }), "Receiver verifies");
    await rejects(
      receiver.verify({ signature: sig, body: `${hit.body} `, url }),
      "Receiver refuses a changed body",
    );

    await client.publish({ url: dest.url("/put"), body: "raw text", method: "PUT" });
    const [put] = await dest.waitFor("/put");
    check(put.body === "raw text", "publish sends a raw body");

    const later = await client.publish({ url: dest.url("/later"), body: "x", delay: 300 });
    const msg = await client.messages.get(later.messageId);
    check(msg.notBefore >= msg.createdAt + 299_000, "delay sets notBefore");
    await client.messages.cancel(later.messageId);

    const first = await client.publish({ url: dest.url("/dedup"), deduplicationId: "d-1" });
    const again = await client.publish({ url: dest.url("/dedup"), deduplicationId: "d-1" });
    check(again.deduplicated === true && again.messageId === first.messageId, "deduplicated");

    await client.urlGroups.addEndpoints({
      name: "fanout",
      endpoints: [{ url: dest.url("/g1") }, { url: dest.url("/g2") }],
    });
    const batch = await client.batchJSON([
      { url: dest.url("/b1"), body: { n: 1 } },
      { urlGroup: "fanout", body: { n: 2 } },
      { url: dest.url("/b3"), body: { n: 3 }, queueName: "batch-queue" },
    ]);
    check(batch.length === 3 && batch[0].messageId, "batchJSON answers one entry per item");
    check(Array.isArray(batch[1]) && batch[1].length === 2, "a URL group item fans out");
    await dest.waitFor("/b1");
    await dest.waitFor("/g1");
    await dest.waitFor("/g2");
    const [queued] = await dest.waitFor("/b3");
    check(JSON.parse(queued.body).n === 3, "a batch item with a queue is delivered");
    const raw = await client.batch([{ url: dest.url("/braw"), body: "plain" }]);
    check(raw.length === 1, "batch answers an array");
    check((await dest.waitFor("/braw"))[0].body === "plain", "batch delivers a raw body");

    dest.respond("/cb-src", 201);
    await client.publish({ url: dest.url("/cb-src"), body: "src", callback: dest.url("/cb") });
    const [cb] = await dest.waitFor("/cb");
    const result = JSON.parse(cb.body);
    check(result.status === 201 && result.sourceBody === btoa("src"), "callback gets the result");

    dest.respond("/dead", 500);
    await client.publish({ url: dest.url("/dead"), retries: 0, failureCallback: dest.url("/fcb") });
    const [fcb] = await dest.waitFor("/fcb");
    check(JSON.parse(fcb.body).dlqId, "the failure callback carries the DLQ id");

    await refused(client.publish({ urlGroup: "no-such-group" }), 404, "an unknown URL group");

    // The SDK's dev-server health check trusts a server whose GET /v2/keys shows the dev keys.
    const keys = await fetch(`${process.env.QSTASH_URL}/v2/keys`, {
      headers: { Authorization: `Bearer ${process.env.QSTASH_TOKEN}` },
    }).then((r) => r.json());
    check(keys.current === process.env.QSTASH_CURRENT_SIGNING_KEY, "GET /v2/keys");
    await eventually(
      async () => (await client.logs({ filter: { url: dest.url("/put") } })).logs.length > 0,
      "logs of the raw publish",
    );
  },
  [dest],
);
