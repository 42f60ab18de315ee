// URL groups: addEndpoints, get, list, publish fan-out, removeEndpoints, delete.
import { Destination, check, client, refused, run } from "./lib.mjs";

const dest = await Destination.start();

await run(
  "url_groups",
  async () => {
    await client.urlGroups.addEndpoints({
      name: "js-group",
      endpoints: [{ name: "first", url: dest.url("/e1") }, { url: dest.url("/e2") }],
    });
    let group = await client.urlGroups.get("js-group");
    check(group.name === "js-group" && group.endpoints.length === 2, "get");
    check(group.endpoints.some((e) => e.name === "first" && e.url === dest.url("/e1")), "names");
    check((await client.urlGroups.list()).map((g) => g.name).join() === "js-group", "list");

    const sent = await client.publishJSON({ urlGroup: "js-group", body: { to: "all" } });
    check(sent.length === 2 && sent.every((m) => m.messageId && m.url), "one message each");
    for (const path of ["/e1", "/e2"]) {
      const [hit] = await dest.waitFor(path);
      check(hit.headers["upstash-topic-name"] === "js-group", `${path} knows its group`);
    }

    await client.urlGroups.removeEndpoints({ name: "js-group", endpoints: [{ name: "first" }] });
    group = await client.urlGroups.get("js-group");
    check(group.endpoints.map((e) => e.url).join() === dest.url("/e2"), "removeEndpoints");

    await client.urlGroups.delete("js-group");
    await refused(client.urlGroups.get("js-group"), 404, "a deleted group");
    check((await client.urlGroups.list()).length === 0, "none left");
  },
  [dest],
);
