// Drives agent serve's POST /v1/responses with the official OpenAI SDK for Node: plain and streamed
// text, a forced function call plain and streamed, its output sent back as input items, and a
// json_schema text format. The Go test (server/compat/tools_test.go) starts the server on a
// generated model with a family's real template; any failed expectation exits non-zero.
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
const tools = [{
  type: "function", name: "get_weather", description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 }, unit: { enum: ["c", "f"] } }, required: ["city", "unit"] },
}];

const plain = await client.responses.create({ model, input: "Say hello", instructions: "Be brief.", temperature: 0, max_output_tokens: 8 });
check(plain.object === "response" && plain.output[0].type === "message", "plain: a message item");
check(typeof plain.output_text === "string" && plain.output_text.length > 0, "plain: output_text");
check(plain.usage.output_tokens <= 8 && plain.status === (plain.usage.output_tokens === 8 ? "incomplete" : "completed"),
  "plain: at most 8 output tokens, incomplete at the limit: " + plain.usage.output_tokens + " " + plain.status);
out.plain = { text: plain.output_text };

let streamedText = "";
const types = [];
let completed = null;
for await (const ev of await client.responses.create({ model, input: "Say hello", instructions: "Be brief.", temperature: 0, max_output_tokens: 8, stream: true })) {
  types.push(ev.type);
  if (ev.type === "response.output_text.delta") streamedText += ev.delta;
  if (ev.type === "response.completed") completed = ev.response;
}
check(types[0] === "response.created" && types[types.length - 1] === "response.completed", "streamed: created first, completed last: " + types.join(","));
check(streamedText === plain.output_text, "streamed text equals the plain text: " + JSON.stringify([streamedText, plain.output_text]));
check(completed.output[0].content[0].text === streamedText, "streamed: the completed response holds the text");

const forced = await client.responses.create({ model, input: "Weather in Paris?", tools, tool_choice: { type: "function", name: "get_weather" }, temperature: 0, max_output_tokens: 300 });
const fc = forced.output.find((o) => o.type === "function_call");
check(fc && fc.name === "get_weather", "forced: a function_call item");
const args = JSON.parse(fc.arguments);
check(typeof args.city === "string" && args.city.length <= 12 && ["c", "f"].includes(args.unit), "forced: arguments follow the schema: " + fc.arguments);
out.forced = args;

let streamedArgs = "";
let doneItem = null;
for await (const ev of await client.responses.create({ model, input: "Weather in Paris?", tools, tool_choice: "required", temperature: 0, max_output_tokens: 300, stream: true })) {
  if (ev.type === "response.function_call_arguments.delta") streamedArgs += ev.delta;
  if (ev.type === "response.output_item.done" && ev.item.type === "function_call") doneItem = ev.item;
}
check(doneItem && doneItem.arguments === streamedArgs, "streamed call: the deltas make the arguments");
JSON.parse(streamedArgs);

const followUp = await client.responses.create({
  model, temperature: 0, max_output_tokens: 8, tools, tool_choice: "none",
  input: [{ role: "user", content: "Weather in Paris?" }, fc, { type: "function_call_output", call_id: fc.call_id, output: "sunny, 21 C" }],
});
check(followUp.output[0].type === "message", "round trip: a message answers the function output");
out.round_trip = { text: followUp.output_text, input_tokens: followUp.usage.input_tokens };

const structured = await client.responses.create({
  model, input: "Describe a pet", temperature: 0, max_output_tokens: 300,
  text: { format: { type: "json_schema", name: "pet", strict: true, schema: { type: "object", properties: { kind: { enum: ["cat", "dog"] }, age: { type: "integer" } }, required: ["kind", "age"], additionalProperties: false } } },
});
const pet = JSON.parse(structured.output_text);
check(["cat", "dog"].includes(pet.kind) && Number.isInteger(pet.age), "json_schema: follows the schema: " + structured.output_text);
out.structured = pet;

try {
  await client.responses.create({ model, input: "hi", previous_response_id: "resp_x" });
  check(false, "previous_response_id must be refused");
} catch (err) {
  check(err instanceof OpenAI.BadRequestError && /previous_response_id/.test(err.message), "previous_response_id: a 400 naming it, got " + err);
}
console.log(JSON.stringify(out));
