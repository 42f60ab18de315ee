// The DLQ: list with filters and cursors, get-by-list, delete and retry by id, ids, filter, all.
import { Destination, check, client, deadLetters, refused, run } from "./lib.mjs";

const dest = await Destination.start();

/** Publish `n` messages that fail once and land in the DLQ; return their message ids. */
async function failing(path, n, extra = {}) {
  dest.respond(path, 500);
  const ids = [];
  for (let i = 0; i < n; i++) {
    const sent = await client.publish({ url: dest.url(path), body: `${i}`, retries: 0, ...extra });
    ids.push(sent.messageId);
  }
  return ids;
}

await run(
  "dlq",
  async () => {
    const [first] = await failing("/one", 1, { label: "solo" });
    const [entry] = await deadLetters({ messageId: first }, 1);
    check(entry.responseStatus === 500 && entry.responseBody === "nope", "the last response");
    check(entry.url === dest.url("/one") && entry.label === "solo", "the message's fields");
    check((await deadLetters({ label: "solo", responseStatus: 500 }, 1)).length === 1, "AND");
    check((await client.dlq.listMessages({ dlqIds: [entry.dlqId] })).messages.length === 1, "ids");
    await client.dlq.delete(entry.dlqId);
    await refused(client.dlq.delete(entry.dlqId), 404, "deleting a deleted entry");

    await failing("/page", 3, { label: "paged" });
    await deadLetters({ label: "paged" }, 3);
    const page = await client.dlq.listMessages({ count: 2, filter: { label: "paged" } });
    check(page.messages.length === 2 && page.cursor, "a listed page has a cursor");
    const last = await client.dlq.listMessages({
      count: 2,
      cursor: page.cursor,
      filter: { label: "paged" },
    });
    check(last.messages.length === 1 && last.cursor === undefined, "the last page has none");

    let res = await client.dlq.delete({ filter: { label: "paged" }, count: 2 });
    check(res.deleted === 2 && res.cursor, "a filtered delete honours count, returns a cursor");
    res = await client.dlq.delete({ filter: { label: "paged" }, count: 2, cursor: res.cursor });
    check(res.deleted === 1 && res.cursor === undefined, "the next page finishes it");

    await refused(client.dlq.delete({ filter: { labeel: "x" } }), 400, "a typo", "labeel");
    await refused(client.dlq.delete({ filter: { host: "127.0.0.1" } }), 400, "host on the DLQ");
    await refused(client.dlq.listMessages({ filter: { path: "/one" } }), 400, "path on the DLQ");

    await failing("/again", 3, { label: "retry" });
    const dead = await deadLetters({ label: "retry" }, 3);
    dest.respond("/again", 200);
    res = await client.dlq.retry(dead[0].dlqId);
    check(res.responses.length === 1 && res.cursor === undefined, "retry(id): no cursor");
    res = await client.dlq.retry({ filter: { label: "retry" }, count: 1 });
    check(res.responses.length === 1 && res.cursor, "a filtered retry honours count");
    res = await client.dlq.retry({ filter: { label: "retry" }, cursor: res.cursor });
    check(res.responses.length === 1 && res.cursor === undefined, "and pages with the cursor");
    check((await dest.waitFor("/again", 6)).length === 6, "retried messages are delivered");
    await deadLetters({ label: "retry" }, 0);

    const ids = await failing("/many", 2, { label: "many" });
    const many = await deadLetters({ label: "many" }, 2);
    check(ids.every((id) => many.some((m) => m.messageId === id)), "both dead-lettered");
    check((await client.dlq.delete(many.map((m) => m.dlqId))).deleted === 2, "delete([ids])");

    await failing("/rest", 3);
    await deadLetters({ url: dest.url("/rest") }, 3);
    res = await client.dlq.delete({ all: true, count: 1 });
    check(res.deleted === 1 && res.cursor, "all + count deletes one page");
    check((await client.dlq.delete({ all: true })).deleted === 2, "all deletes the rest");
    check((await client.dlq.listMessages()).messages.length === 0, "the DLQ is empty");
  },
  [dest],
);
