// The Vercel AI SDK's default OpenAI provider against the gateway: openai("dos-ai") calls /v1/responses.
// Usage: node check.mjs BASE_URL API_KEY  → prints one JSON line with what each call saw.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });

const generated = await generateText({ model: openai("dos-ai"), prompt: "Say hello", maxRetries: 0 });
const streamed = streamText({ model: openai("dos-ai"), prompt: "Say hello", maxRetries: 0 });
let text = "";
for await (const delta of streamed.textStream) text += delta;
const usage = await streamed.usage;

console.log(
  JSON.stringify({
    generated: { text: generated.text, input: generated.usage.inputTokens, output: generated.usage.outputTokens },
    streamed: { text, input: usage.inputTokens, output: usage.outputTokens },
  }),
);
