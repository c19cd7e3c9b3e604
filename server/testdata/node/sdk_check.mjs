// Drives agent serve with the official OpenAI SDK for Node, as a user's program would. The Go test
// (server/sdk_test.go) starts the server, sets OPENAI_BASE_URL and OPENAI_API_KEY, runs this script
// and checks the JSON it prints. Any failed expectation exits non-zero with a message.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0, timeout: 30000 });
const out = {};
function check(cond, msg) {
  if (!cond) {
    console.error("FAIL: " + msg);
    process.exit(1);
  }
}
const messages = [{ role: "user", content: process.env.SDK_PROMPT || "hello" }];

const models = await client.models.list();
out.models = models.data.map((m) => m.id);
check(out.models.length === 1, "models.list returns one model");

const chat = await client.chat.completions.create({ model: out.models[0], messages, temperature: 0, max_tokens: 64 });
out.chat = { content: chat.choices[0].message.content, finish_reason: chat.choices[0].finish_reason, usage: chat.usage, object: chat.object };
check(chat.choices[0].message.role === "assistant", "chat message role is assistant");

const stream = await client.chat.completions.create({
  model: out.models[0], messages, temperature: 0, max_tokens: 64, stream: true, stream_options: { include_usage: true },
});
let text = "";
let finish = null;
let usage = null;
let chunks = 0;
let firstRole = null;
for await (const chunk of stream) {
  chunks++;
  const c = chunk.choices[0];
  if (c) {
    if (firstRole === null) firstRole = c.delta.role || "";
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}
out.chat_stream = { content: text, finish_reason: finish, usage, chunks, first_role: firstRole };

const cmpl = await client.completions.create({ model: out.models[0], prompt: "Once upon a time", max_tokens: 5, temperature: 0 });
out.completion = { text: cmpl.choices[0].text, finish_reason: cmpl.choices[0].finish_reason, usage: cmpl.usage };

const cstream = await client.completions.create({ model: out.models[0], prompt: "Once upon a time", max_tokens: 5, temperature: 0, stream: true });
let ctext = "";
let cfinish = null;
for await (const chunk of cstream) {
  if (chunk.choices[0]) {
    ctext += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) cfinish = chunk.choices[0].finish_reason;
  }
}
out.completion_stream = { text: ctext, finish_reason: cfinish };

try {
  await client.chat.completions.create({ model: out.models[0], messages: [], max_tokens: 4 });
  check(false, "an empty messages array must be refused");
} catch (err) {
  check(err instanceof OpenAI.BadRequestError, "empty messages gives BadRequestError, got " + err);
  out.bad_request = { status: err.status, type: err.type, message: err.message };
}

const wrongKey = new OpenAI({ apiKey: "wrong-key", maxRetries: 0 });
try {
  await wrongKey.models.list();
  check(false, "a wrong API key must be refused");
} catch (err) {
  check(err instanceof OpenAI.AuthenticationError, "wrong key gives AuthenticationError, got " + err);
  out.auth_error = { status: err.status };
}

console.log(JSON.stringify(out));
