// Resumes a stream through the AI SDK's own chat transport (what useChat({resume: true}) calls),
// pointed at a bfstream stream URL, and folds the parts into a UI message with readUIMessageStream.
// Prints one JSON line: {text, reasoning, sources, types, finishReason, messageId}.
// Usage: node read-ai-sdk.mjs <url>
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [url] = process.argv.slice(2);
setTimeout(() => {
  console.error("read-ai-sdk: no end within 60 s");
  process.exit(3);
}, 60_000).unref();

const transport = new DefaultChatTransport({
  api: "http://unused.invalid/api/chat",
  prepareReconnectToStreamRequest: () => ({ api: url }),
});
const chunks = await transport.reconnectToStream({ chatId: "bfstream" });
if (chunks === null) {
  console.log(JSON.stringify({ none: true }));
  process.exit(0);
}
const types = [];
let finishReason = null;
const seen = chunks.pipeThrough(
  new TransformStream({
    transform(chunk, controller) {
      types.push(chunk.type);
      if (chunk.type === "finish") finishReason = chunk.finishReason ?? null;
      controller.enqueue(chunk);
    },
  }),
);
let message = null;
for await (const snapshot of readUIMessageStream({ stream: seen, terminateOnError: false })) message = snapshot;
const parts = message?.parts ?? [];
const text = parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const reasoning = parts.filter((p) => p.type === "reasoning").map((p) => p.text).join("");
const sources = parts.filter((p) => p.type === "source-url").map((p) => ({ url: p.url, title: p.title ?? null }));
const order = parts.map((p) => p.type);
console.log(JSON.stringify({ text, reasoning, sources, order, types, finishReason, messageId: message?.id ?? null }));
