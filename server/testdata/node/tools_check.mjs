// Drives agent serve's tool calls, structured output and logprobs with the official OpenAI SDK for
// Node, as a coding agent would. The Go test (server/compat/tools_test.go) starts the server on a
// generated model whose GGUF carries a family's real chat template, sets OPENAI_BASE_URL and runs
// this script; it prints what it saw as JSON. Any failed expectation exits non-zero with a message.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0, timeout: 120000 });
const out = {};
function check(cond, msg) {
  if (!cond) {
    console.error("FAIL: " + msg);
    process.exit(1);
  }
}
const model = (await client.models.list()).data[0].id;
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: {
        type: "object",
        properties: { city: { type: "string", maxLength: 12 }, unit: { enum: ["c", "f"] }, days: { type: "integer" } },
        required: ["city", "unit"],
      },
    },
  },
  { type: "function", function: { name: "noop", description: "Does nothing", parameters: { type: "object", properties: {} } } },
];
const ask = [{ role: "user", content: "What is the weather in Paris?" }];
const base = { model, temperature: 0, max_tokens: 400, tools };

function checkCall(call, where) {
  check(call.type === "function" && typeof call.id === "string" && call.id.length > 0, where + ": a call has a type and an id");
  check(call.function.name === "get_weather", where + ": the named tool is called, got " + call.function.name);
  const args = JSON.parse(call.function.arguments);
  check(typeof args.city === "string" && args.city.length <= 12, where + ": city follows the schema: " + call.function.arguments);
  check(args.unit === "c" || args.unit === "f", where + ": unit follows the schema: " + call.function.arguments);
  check(args.days === undefined || Number.isInteger(args.days), where + ": days follows the schema: " + call.function.arguments);
  return args;
}

// Forced (named) call, plain.
const named = await client.chat.completions.create({ ...base, messages: ask, tool_choice: { type: "function", function: { name: "get_weather" } } });
const nc = named.choices[0];
check(nc.finish_reason === "tool_calls", "named: finish_reason tool_calls, got " + nc.finish_reason);
check(nc.message.tool_calls && nc.message.tool_calls.length >= 1, "named: the message has tool calls");
out.named = { args: checkCall(nc.message.tool_calls[0], "named"), content: nc.message.content };

// Required, streamed: the deltas assemble into the same kind of call.
const stream = await client.chat.completions.create({ ...base, messages: ask, tool_choice: "required", parallel_tool_calls: false, stream: true });
const calls = [];
let finish = null;
for await (const chunk of stream) {
  const c = chunk.choices[0];
  if (!c) continue;
  for (const d of c.delta.tool_calls || []) {
    calls[d.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
    if (d.id) calls[d.index].id = d.id;
    if (d.function?.name) calls[d.index].function.name += d.function.name;
    if (d.function?.arguments) calls[d.index].function.arguments += d.function.arguments;
  }
  if (c.finish_reason) finish = c.finish_reason;
}
check(finish === "tool_calls", "streamed: finish_reason tool_calls, got " + finish);
check(calls.length === 1, "streamed: one call (parallel_tool_calls false), got " + calls.length);
const noopOrWeather = calls[0].function.name;
check(noopOrWeather === "get_weather" || noopOrWeather === "noop", "streamed: a known tool, got " + noopOrWeather);
out.streamed = { name: noopOrWeather, arguments: calls[0].function.arguments };

// A tool result round trip: the assistant's call and the tool's answer go back through the template.
const call = nc.message.tool_calls[0];
const followUp = await client.chat.completions.create({
  model, temperature: 0, max_tokens: 16, tools, tool_choice: "none",
  messages: [...ask, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "sunny, 21 C" }],
});
check(typeof followUp.choices[0].message.content === "string", "round trip: a text answer");
check(!followUp.choices[0].message.tool_calls, "round trip: tool_choice none makes no calls");
out.round_trip = { content: followUp.choices[0].message.content, prompt_tokens: followUp.usage.prompt_tokens };

// Structured output through the SDK's json_schema response format.
const schema = {
  type: "object",
  properties: { name: { type: "string", maxLength: 10 }, age: { type: "integer" }, pet: { enum: ["cat", "dog"] } },
  required: ["name", "age", "pet"],
  additionalProperties: false,
};
const structured = await client.chat.completions.create({
  model, temperature: 0, max_tokens: 400, messages: [{ role: "user", content: "Describe a person" }],
  response_format: { type: "json_schema", json_schema: { name: "person", strict: true, schema } },
});
const person = JSON.parse(structured.choices[0].message.content);
check(typeof person.name === "string" && person.name.length <= 10 && Number.isInteger(person.age) && ["cat", "dog"].includes(person.pet),
  "json_schema: the content follows the schema: " + structured.choices[0].message.content);
out.structured = person;

// Logprobs, plain and streamed.
const lp = await client.chat.completions.create({ model, temperature: 0, max_tokens: 5, messages: ask, logprobs: true, top_logprobs: 2 });
const content = lp.choices[0].logprobs.content;
check(content.length >= 1 && content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2), "logprobs: one entry per token with 2 alternatives");
let streamedLogprobs = 0;
for await (const chunk of await client.chat.completions.create({ model, temperature: 0, max_tokens: 5, messages: ask, logprobs: true, stream: true })) {
  streamedLogprobs += chunk.choices[0]?.logprobs?.content?.length || 0;
}
check(streamedLogprobs === content.length, "streamed logprobs: " + streamedLogprobs + " entries, plain " + content.length);
out.logprobs = { tokens: content.length };

// A tool the server cannot honour is a 400 naming the field.
try {
  await client.chat.completions.create({ ...base, messages: ask, tool_choice: { type: "function", function: { name: "missing" } } });
  check(false, "an unknown named tool must be refused");
} catch (err) {
  check(err instanceof OpenAI.BadRequestError && /tool_choice/.test(err.message), "unknown named tool: BadRequestError naming tool_choice, got " + err);
}

console.log(JSON.stringify(out));
