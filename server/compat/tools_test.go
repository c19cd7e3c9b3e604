package compat

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/internal/nodetest"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// toolFamilies are the chat templates whose tool-call formats the server parses.
var toolFamilies = []string{"qwen3", "qwen3.5", "llama3", "mistral", "deepseek", "gpt-oss"}

// The official OpenAI SDK for Node drives tool calls (forced plain and streamed, a tool result
// round trip), json_schema output, logprobs and the Responses API against a random-weight model
// carrying each family's real template: the grammar makes even a random model write valid calls.
func TestToolCallsThroughTheNodeSDKForEachFamily(t *testing.T) {
	node, dir := nodetest.Require(t)
	for _, family := range toolFamilies {
		t.Run(family, func(t *testing.T) {
			model := testmodels.WithTemplate(t, compatModel, family)
			url := startOursSized(t, model, 4096, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for _, script := range []string{"tools_check.mjs", "responses_check.mjs"} {
				cmd := exec.CommandContext(ctx, node, script)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+url+"/v1", "OPENAI_API_KEY=unused")
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s: %v\n%s%s", script, err, stderr.String(), out)
				}
				t.Logf("%s: %s", script, out)
			}
		})
	}
}

// The same forced call on stock llama-server (--jinja) and on ours: both answer with a call in
// OpenAI's shape whose arguments follow the schema.
func TestForcedToolCallSideBySide(t *testing.T) {
	body := `{"messages":[{"role":"user","content":"Weather in Paris?"}],"temperature":0,"max_tokens":400,
		"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",
			"properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["c","f"]}},"required":["city","unit"]}}}],
		"tool_choice":"required"}`
	validator := schemaValidator(t, `{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["c","f"]}},"required":["city","unit"]}`)
	for _, family := range toolFamilies {
		t.Run(family, func(t *testing.T) {
			model := testmodels.WithTemplate(t, compatModel, family)
			theirsURL := startLlamaServer(t, model, "--jinja", "-c", "4096", "-np", "1")
			oursURL := startOursSized(t, model, 4096, 1)
			ours := call(t, oursURL, "POST", "/v1/chat/completions", body)
			// llama-server lets these templates' models reason first, so a random model answers in
			// text whatever the limit: a short one keeps the test quick on a loaded machine.
			theirs := call(t, theirsURL, "POST", "/v1/chat/completions", strings.Replace(body, `"max_tokens":400`, `"max_tokens":40`, 1))
			if ours.status != 200 {
				t.Fatalf("ours: %d %s", ours.status, ours.raw)
			}
			args, _ := field(ours.body, "choices", 0, "message", "tool_calls", 0, "function", "arguments").(string)
			if args == "" {
				t.Fatalf("ours made no call: %s", ours.raw)
			}
			followsSchema(t, validator, "ours", args)
			if got := field(ours.body, "choices", 0, "finish_reason"); got != "tool_calls" {
				t.Errorf("ours: finish_reason %v", got)
			}
			theirsArgs, _ := field(theirs.body, "choices", 0, "message", "tool_calls", 0, "function", "arguments").(string)
			t.Logf("ours %s\ntheirs (%d) %s", args, theirs.status, theirsArgs)
			if theirs.status == 200 && theirsArgs != "" {
				for _, d := range CompareShapes(theirs.body, ours.body, Allowance{}) {
					t.Errorf("%s", d)
				}
			}
		})
	}
}

// The prompt of a tool conversation (tools, an assistant call, the tool's answer) is the one
// llama-server --jinja renders from the same template, character for character.
func TestToolPromptsMatchLlamaServer(t *testing.T) {
	body := `{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call12345","type":"function","function":{"name":"get_weather","arguments":"{\"unit\":\"c\",\"city\":\"Paris\"}"}}]},
		{"role":"tool","tool_call_id":"call12345","content":"sunny, 21 C"}],
		"tools":[{"type":"function","function":{"name":"get_weather","description":"The weather","parameters":{"type":"object",
			"properties":{"unit":{"enum":["c","f"]},"city":{"type":"string","maxLength":12}},"required":["city","unit"]}}}]}`
	for _, family := range toolFamilies {
		if family == "llama3" {
			// Llama 3's template prints tools with tojson(indent=4), which github.com/ardanlabs/jinja
			// v1.8.0 encodes through Go maps: keys sorted. A known difference (docs/server.md).
			continue
		}
		t.Run(family, func(t *testing.T) {
			model := testmodels.WithTemplate(t, compatModel, family)
			theirs := call(t, startLlamaServer(t, model, "--jinja", "-c", "4096", "-np", "1"), "POST", "/apply-template", body)
			ours := call(t, startOursSized(t, model, 4096, 1), "POST", "/apply-template", body)
			if ours.status != 200 || theirs.status != 200 {
				t.Fatalf("status ours %d %s, llama-server %d %s", ours.status, ours.raw, theirs.status, theirs.raw)
			}
			if o, th := field(ours.body, "prompt"), field(theirs.body, "prompt"); o != th {
				t.Errorf("prompts differ:\nours   %q\ntheirs %q", o, th)
			}
		})
	}
}
