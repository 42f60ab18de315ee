// messages.get and every form of messages.cancel: id, ids, filter (host, path, label, ...), all.
import { Destination, check, client, refused, run } from "./lib.mjs";

const dest = await Destination.start();
const other = await Destination.start("localhost");

/** Publish a message that stays pending (due in 300 s); return its id. */
async function pending(url, extra = {}) {
  return (await client.publish({ url, body: "later", delay: 300, ...extra })).messageId;
}

await run(
  "messages",
  async () => {
    const id = await pending(dest.url("/get"), {
      headers: { "X-Kept": "yes" },
      retries: 5,
      retryDelay: "1000 * retried",
      label: ["one", "two"],
      flowControl: { key: "msg-flow", parallelism: 2, rate: 5, period: "1m" },
    });
    const msg = await client.messages.get(id);
    check(msg.url === dest.url("/get") && msg.maxRetries === 5, "get shows url and retries");
    check(new Headers(msg.header).get("X-Kept") === "yes", "get shows forwarded headers");
    check(msg.retryDelayExpression === "1000 * retried", "get shows the retry delay");
    check(msg.label === "one" && msg.labels.join() === "one,two", "get shows the labels");
    check(msg.flowControlKey === "msg-flow" && msg.parallelism === 2, "get shows flow control");
    check(msg.rate === 5 && msg.period === 60, "rate and period (seconds)");
    check((await client.messages.cancel(id)).cancelled === 1, "cancel(id) answers cancelled 1");
    await refused(client.messages.get(id), 404, "a cancelled message is gone");
    await refused(client.messages.cancel(id), 404, "cancelling it again");

    const ids = [await pending(dest.url("/ids")), await pending(dest.url("/ids"))];
    check((await client.messages.cancel(ids)).cancelled === 2, "cancel([ids])");

    for (const path of ["/p/a", "/p/b", "/p/c"]) await pending(dest.url(path));
    await pending(other.url("/p/a"));
    let res = await client.messages.cancel({ filter: { host: "localhost" } });
    check(res.cancelled === 1, "cancel by host touches only that host");
    res = await client.messages.cancel({ filter: { path: ["/p/a", "/p/b"] } });
    check(res.cancelled === 2, "cancel by several paths (OR)");
    res = await client.messages.cancel({ filter: { path: "/p/c", url: dest.url("/p/c") } });
    check(res.cancelled === 1, "filters AND together");

    for (let i = 0; i < 3; i++) await pending(dest.url("/label"), { label: "batch" });
    res = await client.messages.cancel({ filter: { label: "batch" }, count: 2 });
    check(res.cancelled === 2, "count limits a filtered cancel");
    await refused(
      client.messages.cancel({ filter: { lable: "batch" } }),
      400,
      "an unknown filter",
      "lable",
    );
    check((await client.messages.cancel({ filter: { label: "batch" } })).cancelled === 1, "kept");

    await pending(dest.url("/q"), { flowControl: { key: "fk-a", parallelism: 1 } });
    await pending(dest.url("/q"), { flowControl: { key: "fk-b", parallelism: 1 } });
    res = await client.messages.cancel({ filter: { flowControlKey: "fk-a" } });
    check(res.cancelled === 1, "cancel by flow-control key");

    await pending(dest.url("/all"));
    await pending(dest.url("/all"));
    check((await client.messages.cancel({ all: true, count: 1 })).cancelled === 1, "all + count");
    check((await client.messages.cancel({ all: true })).cancelled === 2, "all cancels the rest");
    check(dest.deliveries.length === 0 && other.deliveries.length === 0, "nothing was delivered");
  },
  [dest, other],
);
