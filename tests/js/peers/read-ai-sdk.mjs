// Resumes a stream through the AI SDK's own chat transport (what useChat({resume: true}) calls),
// pointed at a bfstream stream URL, and folds the parts into a UI message with readUIMessageStream.
// Prints one JSON line: {text, types, finishReason, messageId}.
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
const text = (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
console.log(JSON.stringify({ text, types, finishReason, messageId: message?.id ?? null }));
