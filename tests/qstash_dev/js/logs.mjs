// The event log (client.logs, GET /v2/events): states, filters (host, path, ...) and cursors.
import { Destination, check, client, eventually, refused, run } from "./lib.mjs";

const dest = await Destination.start();
const other = await Destination.start("localhost");

/** Log entries `request` selects, once `probe(logs)` holds. */
async function logsWhen(request, probe, what) {
  return await eventually(async () => {
    const { logs } = await client.logs(request);
    return probe(logs) && logs;
  }, what);
}

await run(
  "logs",
  async () => {
    const ok = await client.publish({ url: dest.url("/ok"), body: "b", label: ["l1", "l2"] });
    const done = await logsWhen(
      { filter: { messageId: ok.messageId } },
      (logs) => logs.some((l) => l.state === "DELIVERED"),
      "DELIVERED",
    );
    check(done.map((l) => l.state).join() === "DELIVERED,ACTIVE,CREATED", "newest first");
    const created = done.at(-1);
    check(created.url === dest.url("/ok") && atob(created.body) === "b", "CREATED has the body");
    check(created.label === "l1" && created.labels.join() === "l1,l2", "and the labels");

    dest.respond("/bad", 500);
    const bad = await client.publish({ url: dest.url("/bad"), retries: 1 });
    const failed = await logsWhen(
      { messageIds: [bad.messageId] },
      (logs) => logs.some((l) => l.state === "FAILED"),
      "FAILED",
    );
    check(failed.some((l) => l.state === "RETRY" && l.responseStatus === 500), "a RETRY entry");
    const busy = await client.logs({ filter: { state: "IN_PROGRESS", messageId: bad.messageId } });
    const busyStates = new Set(busy.logs.map((l) => l.state));
    check(busyStates.size > 0, "IN_PROGRESS finds the retried attempts");
    check([...busyStates].every((s) => ["ACTIVE", "RETRY", "ERROR"].includes(s)), "and no other");

    const far = await client.publish({ url: other.url("/ok"), body: "elsewhere" });
    await logsWhen(
      { messageIds: [far.messageId] },
      (logs) => logs.some((l) => l.state === "DELIVERED"),
      "DELIVERED elsewhere",
    );
    const byHost = await client.logs({ filter: { host: "localhost" } });
    check(byHost.logs.length > 0, "logs filtered by host");
    check(byHost.logs.every((l) => l.url.startsWith(other.base)), "only that host");
    const byPath = await client.logs({ filter: { path: "/bad" } });
    check(byPath.logs.every((l) => l.messageId === bad.messageId), "logs filtered by path");
    const byLabel = await client.logs({ filter: { label: "l2" } });
    check(byLabel.logs.every((l) => l.messageId === ok.messageId), "any of the labels matches");
    const byUrl = await client.logs({ filter: { url: [dest.url("/ok"), other.url("/ok")] } });
    check(new Set(byUrl.logs.map((l) => l.url)).size === 2, "several urls (OR)");

    const all = (await client.logs()).logs;
    const first = await client.logs({ count: 2 });
    check(first.logs.length === 2 && first.cursor, "a page of the log has a cursor");
    const rest = await client.logs({ cursor: first.cursor, count: 1000 });
    check(rest.cursor === undefined, "the last page has none");
    const paged = [...first.logs, ...rest.logs].map((l) => `${l.messageId}${l.state}${l.time}`);
    check(paged.join() === all.map((l) => `${l.messageId}${l.state}${l.time}`).join(), "pages");
    check((await client.events({ count: 1 })).events.length === 1, "the deprecated events()");

    await refused(client.logs({ filter: { lable: "l1" } }), 400, "an unknown filter", "lable");
    await refused(client.logs({ filter: { state: "DONE" } }), 400, "an unknown state", "DONE");
  },
  [dest, other],
);
