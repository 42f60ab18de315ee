// Schedules: create (with options, by id, into a queue), get, list, pause/resume, firing, delete.
import { Destination, check, client, refused, run } from "./lib.mjs";

const dest = await Destination.start();

await run(
  "schedules",
  async () => {
    const { scheduleId } = await client.schedules.create({
      destination: dest.url("/nightly"),
      cron: "CRON_TZ=Europe/Madrid 0 3 * * *",
      body: JSON.stringify({ job: "nightly" }),
      headers: { "Content-Type": "application/json", "X-Job": "nightly" },
      method: "PUT",
      retries: 2,
      delay: 10,
      callback: dest.url("/cb"),
      label: "jobs",
    });
    let sched = await client.schedules.get(scheduleId);
    check(sched.destination === dest.url("/nightly") && sched.method === "PUT", "get");
    check(sched.cron === "CRON_TZ=Europe/Madrid 0 3 * * *" && sched.retries === 2, "cron");
    check(sched.header["X-Job"][0] === "nightly" && sched.delay === 10, "headers and delay");
    check(sched.callback === dest.url("/cb") && sched.label === "jobs", "callback and label");
    check(sched.isPaused === false && sched.nextScheduleTime > Date.now(), "armed");

    await client.schedules.pause({ schedule: scheduleId });
    check((await client.schedules.get(scheduleId)).isPaused === true, "pause");
    await client.schedules.resume({ schedule: scheduleId });
    check((await client.schedules.get(scheduleId)).isPaused === false, "resume");

    await client.schedules.create({
      scheduleId: "js-fixed-id",
      destination: dest.url("/v1"),
      cron: "0 * * * *",
    });
    await client.schedules.create({
      scheduleId: "js-fixed-id",
      destination: dest.url("/v2"),
      cron: "30 * * * *",
      queueName: "js-schedule-queue",
    });
    sched = await client.schedules.get("js-fixed-id");
    check(sched.destination === dest.url("/v2") && sched.cron === "30 * * * *", "overwritten");
    check(sched.queueName === "js-schedule-queue", "into a queue");
    const ids = (await client.schedules.list()).map((s) => s.scheduleId).sort();
    check(ids.join() === [scheduleId, "js-fixed-id"].sort().join(), "list");

    // qstash_dev reads a 6th cron field as seconds (a local extension), so this fires quickly.
    const every = await client.schedules.create({
      destination: dest.url("/tick"),
      cron: "* * * * * *",
      body: "tick",
    });
    const [tick] = await dest.waitFor("/tick");
    check(tick.headers["upstash-schedule-id"] === every.scheduleId, "it fires with its id");
    check(tick.body === "tick", "and its body");
    await client.schedules.delete(every.scheduleId);
    sched = await client.schedules.get(scheduleId);
    check(sched.lastScheduleTime === undefined, "an untriggered schedule has no last time");

    await client.schedules.delete(scheduleId);
    await client.schedules.delete("js-fixed-id");
    await refused(client.schedules.get(scheduleId), 404, "a deleted schedule");
    check((await client.schedules.list()).length === 0, "none left");
    await refused(
      client.schedules.create({ destination: dest.url("/x"), cron: "not a cron" }),
      400,
      "a bad cron",
    );
  },
  [dest],
);
