// Queues: upsert, get, list, pause/resume, enqueue/enqueueJSON in FIFO order, delete.
import { Destination, check, client, eventually, refused, run } from "./lib.mjs";

const dest = await Destination.start();

await run(
  "queues",
  async () => {
    const queue = client.queue({ queueName: "js-queue" });
    await queue.upsert({ parallelism: 1 });
    let info = await queue.get();
    check(info.name === "js-queue" && info.parallelism === 1 && info.paused === false, "get");
    check(typeof info.createdAt === "number" && info.lag === 0, "createdAt and lag");
    check((await client.queue().list()).some((q) => q.name === "js-queue"), "list");

    await queue.pause();
    check((await queue.get()).paused === true, "pause");
    const sent = [];
    for (let i = 0; i < 3; i++) {
      sent.push((await queue.enqueueJSON({ url: dest.url("/fifo"), body: { i } })).messageId);
    }
    check((await client.messages.get(sent[0])).queueName === "js-queue", "messages know it");
    check((await queue.get()).lag === 3 && dest.at("/fifo").length === 0, "paused: none sent");
    await queue.resume();
    const got = await dest.waitFor("/fifo", 3);
    check(got.map((d) => JSON.parse(d.body).i).join() === "0,1,2", "FIFO order");
    check(got.map((d) => d.headers["upstash-message-id"]).join() === sent.join(), "same ids");

    const raw = await queue.enqueue({ url: dest.url("/raw"), body: "text" });
    check((await dest.waitFor("/raw"))[0].body === "text" && raw.messageId, "enqueue (raw)");
    await eventually(async () => (await queue.get()).lag === 0, "the queue drains");

    await client.queue({ queueName: "js-queue" }).upsert({ parallelism: 2, paused: true });
    info = await queue.get();
    check(info.parallelism === 2 && info.paused === true, "upsert updates and pauses");

    await queue.delete();
    await refused(queue.get(), 404, "a deleted queue");
  },
  [dest],
);
