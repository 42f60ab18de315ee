// Flow control: parallelism gating, get, global parallelism, pause/resume, pin/unpin, resetRate.
import { Destination, check, client, eventually, refused, run } from "./lib.mjs";

const dest = await Destination.start();

await run(
  "flow_control",
  async () => {
    dest.slow("/gated", 200);
    const flowControl = { key: "one-at-a-time", parallelism: 1 };
    for (let i = 0; i < 3; i++) await client.publish({ url: dest.url("/gated"), flowControl });
    const gated = await dest.waitFor("/gated", 3);
    const ordered = [...gated].sort((a, b) => a.started - b.started);
    check(
      ordered.every((d, i) => i === 0 || d.started >= ordered[i - 1].ended),
      "parallelism 1 never overlaps two deliveries",
    );

    const key = "managed";
    const later = await client.publish({
      url: dest.url("/managed"),
      delay: 300,
      flowControl: { key, parallelism: 4, rate: 10, period: "1m" },
    });
    let info = await client.flowControl.get(key);
    check(info.flowControlKey === key && info.parallelismMax === 4, "get shows parallelism");
    check(info.rateMax === 10 && info.ratePeriod === 60, "get shows rate and period");
    check(info.isPaused === false && typeof info.waitListSize === "number", "and its state");
    const global = await client.flowControl.getGlobalParallelism();
    check(typeof global.parallelismMax === "number", "global parallelism");

    await client.flowControl.pause(key);
    check((await client.flowControl.get(key)).isPaused === true, "pause");
    await client.flowControl.resume(key);
    check((await client.flowControl.get(key)).isPaused === false, "resume");

    await client.flowControl.pin(key, { parallelism: 2, rate: 3, period: 30 });
    info = await client.flowControl.get(key);
    check(info.isPinnedParallelism && info.isPinnedRate && info.parallelismMax === 2, "pin");
    check(info.rateMax === 3 && info.ratePeriod === 30, "pinned rate and period");
    await client.flowControl.unpin(key, { rate: true });
    info = await client.flowControl.get(key);
    check(info.isPinnedParallelism && !info.isPinnedRate, "unpin one field, keep the other");
    await client.flowControl.unpin(key, { parallelism: true });
    check(!(await client.flowControl.get(key)).isPinnedParallelism, "unpin the other");

    await client.publish({ url: dest.url("/rated"), flowControl: { key, rate: 10, period: "1m" } });
    await dest.waitFor("/rated");
    await eventually(async () => (await client.flowControl.get(key)).rateCount >= 1, "counted");
    await client.flowControl.resetRate(key);
    check((await client.flowControl.get(key)).rateCount === 0, "resetRate clears the count");

    await client.messages.cancel(later.messageId);
    await refused(client.flowControl.get("never-used"), 404, "an unknown key");
  },
  [dest],
);
