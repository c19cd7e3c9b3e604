// Asks agent serve for embeddings with the official OpenAI SDK for Node: once with the SDK's default
// (it sends encoding_format "base64" and decodes the answer to numbers) and once as floats. The Go test
// (server/llamacompat_test.go) compares the two. Prints {"default": [[...]], "float": [[...]]}.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0, timeout: 30000 });
const input = ["hello world", "another text"];
const def = await client.embeddings.create({ model: "m", input });
const flt = await client.embeddings.create({ model: "m", input, encoding_format: "float" });
console.log(JSON.stringify({
  default: def.data.map((d) => Array.from(d.embedding)),
  float: flt.data.map((d) => Array.from(d.embedding)),
}));
