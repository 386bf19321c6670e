// Reads one bfstream stream URL with the official Durable Streams client, as a page would, and
// prints what it got as one JSON line: {items, offset, upToDate, streamClosed}.
// Usage: node read-durable.mjs <url> <offset> <live: false|long-poll|sse|true>
import { stream } from "@durable-streams/client";

const [url, offset, liveArg] = process.argv.slice(2);
const live = liveArg === "false" ? false : liveArg === "true" ? true : liveArg;
setTimeout(() => {
  console.error("read-durable: no end within 60 s");
  process.exit(3);
}, 60_000).unref();

const res = await stream({ url, offset, live, json: true });
const items = [];
for await (const item of res.jsonStream()) items.push(item);
console.log(JSON.stringify({ items, offset: res.offset, upToDate: res.upToDate, streamClosed: res.streamClosed }));
