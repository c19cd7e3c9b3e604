package chatfmt

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen"
)

var weatherTool = Tool{Name: "get_weather", Description: "Weather in a city",
	Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}`)}

// Every family's real template renders a tool conversation: the tools, the assistant's call and
// the tool's answer all reach the prompt, and the format is the one the family writes.
func TestFamilyTemplatesRenderToolConversations(t *testing.T) {
	wantFormat := map[string]string{"qwen3": "hermes", "qwen3.5": "qwen3-coder-xml", "llama3": "llama3-json", "mistral": "mistral",
		"gpt-oss": "gpt-oss-harmony", "deepseek": "deepseek-dsml", "chatml": ""}
	for _, family := range modelgen.TemplateFamilies() {
		t.Run(family, func(t *testing.T) {
			src, err := modelgen.ChatTemplateOf(family)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := Parse(src, "<|endoftext|>", "<|im_end|>")
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if f := tmpl.Format(); f != nil {
				got = f.Name()
			}
			if got != wantFormat[family] {
				t.Fatalf("format %q, want %q", got, wantFormat[family])
			}
			msgs := []Message{
				{Role: "system", Content: "Be brief."},
				{Role: "user", Content: "Weather in Paris?"},
				{Role: "assistant", ToolCalls: []Call{{ID: "call12345", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
				{Role: "tool", ToolCallID: "call12345", Name: "get_weather", Content: "sunny, 21C"},
			}
			var tools []Tool
			if tmpl.Format() != nil || family == "gpt-oss" {
				tools = []Tool{weatherTool}
			}
			prompt, err := tmpl.Render(msgs, tools, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Weather in Paris?", "sunny, 21C"} {
				if !strings.Contains(prompt, want) {
					t.Errorf("prompt lacks %q:\n%s", want, prompt)
				}
			}
			if tools != nil && (!strings.Contains(prompt, "get_weather") || !strings.Contains(prompt, "Paris")) {
				t.Errorf("prompt lacks the tool or the call:\n%s", prompt)
			}
		})
	}
}

func TestParseEachFormat(t *testing.T) {
	tools := []Tool{weatherTool}
	for _, c := range []struct {
		f            Format
		text         string
		content      string
		name, args   string
		wantNumCalls int
	}{
		{hermes{}, "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "Let me check.", "get_weather", `{"city": "Paris"}`, 1},
		{hermes{}, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"A\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"B\"}}\n</tool_call>", "", "get_weather", `{"city":"A"}`, 2},
		{hermes{}, "just text", "just text", "", "", 0},
		{qwenXML{}, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", "", "get_weather", `{"city":"Paris","days":3}`, 1},
		{llama3{}, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, "", "get_weather", `{"city":"Paris"}`, 1},
		{mistral{}, `[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}`, "", "get_weather", `{"city":"Paris"}`, 1},
		{deepseekDSML{}, "Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
			"Checking.", "get_weather", `{"city":"Paris","days":3}`, 1},
		{harmony{}, "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
			"", "get_weather", `{"city":"Paris"}`, 1},
		{harmony{}, "<|channel|>analysis<|message|>Thinking.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.", "It is sunny.", "", "", 0},
		{harmony{}, "<|channel|>final<|message|>Checking.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\":\"Paris\",\"days\":3}<|call|>",
			"Checking.", "get_weather", `{"city":"Paris","days":3}`, 1},
		{harmony{}, "plain words", "plain words", "", "", 0},
		{harmony{}, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Pa", "", "", "", 0},
	} {
		content, calls, err := c.f.Parse(c.text, tools)
		if err != nil {
			t.Errorf("%s %q: %v", c.f.Name(), c.text, err)
			continue
		}
		if content != c.content || len(calls) != c.wantNumCalls {
			t.Errorf("%s %q: content %q calls %+v", c.f.Name(), c.text, content, calls)
			continue
		}
		if len(calls) > 0 && (calls[0].Name != c.name || calls[0].Arguments != c.args) {
			t.Errorf("%s %q: call %+v, want %s %s", c.f.Name(), c.text, calls[0], c.name, c.args)
		}
	}
}

func TestGrammarsNameTheTools(t *testing.T) {
	for _, f := range []Format{hermes{}, qwenXML{}, llama3{}, mistral{}, deepseekDSML{}, harmony{}} {
		g, triggers, err := f.Grammar([]Tool{weatherTool, {Name: "noop"}}, Choice{Name: "get_weather"})
		if err != nil || triggers != nil || !strings.Contains(g, "get_weather") || strings.Contains(g, "noop") {
			t.Errorf("%s named: %v %v\n%s", f.Name(), err, triggers, g)
		}
		_, triggers, err = f.Grammar([]Tool{weatherTool}, Choice{})
		if err != nil || len(triggers) == 0 {
			t.Errorf("%s auto: %v, triggers %v", f.Name(), err, triggers)
		}
		if _, _, err := f.Grammar([]Tool{weatherTool}, Choice{Name: "missing"}); err == nil {
			t.Errorf("%s: a missing named tool is not an error", f.Name())
		}
	}
}
