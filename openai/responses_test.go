package openai

import (
	"encoding/json"
	"errors"
	"testing"
)

func responsesCall(t *testing.T, body string) (ResponsesCall, error) {
	t.Helper()
	var req ResponsesRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	return FromResponsesRequest(req, DefaultSampling)
}

func TestResponsesInputBecomesAChat(t *testing.T) {
	call, err := responsesCall(t, `{"instructions":"be brief","input":[
		{"role":"user","content":[{"type":"input_text","text":"weather?"}]},
		{"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
		{"type":"function_call_output","call_id":"c1","output":"sunny"}],
		"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"get_weather"},
		"max_output_tokens":9,"text":{"format":{"type":"json_object"}}}`)
	var re *RequestError
	if !errors.As(err, &re) || re.Field != "text.format" {
		t.Fatalf("tools with a JSON format: %v, want a 400 naming text.format", err)
	}
	call, err = responsesCall(t, `{"instructions":"be brief","input":[
		{"role":"user","content":[{"type":"input_text","text":"weather?"}]},
		{"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
		{"type":"function_call_output","call_id":"c1","output":"sunny"}],
		"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"get_weather"},
		"max_output_tokens":9}`)
	if err != nil {
		t.Fatal(err)
	}
	m := call.Chat.Messages
	if len(m) != 4 || m[0].Role != "system" || m[1].Content != "weather?" || m[2].Role != "assistant" || len(m[2].ToolCalls) != 1 ||
		m[2].ToolCalls[0].ID != "c1" || m[3].Role != "tool" || m[3].ToolCallID != "c1" || m[3].Content != "sunny" {
		t.Fatalf("messages %+v", m)
	}
	if call.Chat.Request.MaxTokens != 9 || call.Chat.Tools.Choice.Name != "get_weather" || len(call.Chat.Tools.Tools) != 1 {
		t.Fatalf("call %+v", call.Chat)
	}
}

func TestResponsesRefusesWhatItCannotDo(t *testing.T) {
	for body, field := range map[string]string{
		`{"input":"hi","previous_response_id":"resp_1"}`:   "previous_response_id",
		`{"input":"hi","background":true}`:                 "background",
		`{"input":"hi","reasoning":{"effort":"high"}}`:     "reasoning",
		`{"input":"hi","include":["reasoning.encrypted"]}`: "include",
		`{"input":[{"type":"image_generation_call"}]}`:     "input",
		`{"input":"hi","tools":[{"type":"web_search"}]}`:   "tools",
		`{"input":"hi","text":{"format":{"type":"yaml"}}}`: "text.format",
		`{}`: "input",
	} {
		_, err := responsesCall(t, body)
		var re *RequestError
		if !errors.As(err, &re) || re.Field != field {
			t.Errorf("%s: %v, want a 400 naming %s", body, err, field)
		}
	}
}

func TestChatRefusesFieldsItCannotHonour(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"x"}]`
	for _, c := range []struct{ extra, field string }{
		{`"logit_bias":{"15":-100}`, "logit_bias"},
		{`"modalities":["text","audio"]`, "modalities"},
		{`"functions":[{"name":"f"}]`, "functions"},
		{`"reasoning_effort":"high"`, "reasoning_effort"},
	} {
		_, err := chatCall(t, `{`+msgs+`,`+c.extra+`}`)
		var re *RequestError
		if !errors.As(err, &re) || re.Field != c.field {
			t.Errorf("%s: %v, want a 400 naming %s", c.extra, err, c.field)
		}
	}
	if _, err := chatCall(t, `{`+msgs+`,"modalities":["text"],"logit_bias":{},"store":false}`); err != nil {
		t.Errorf("harmless values refused: %v", err)
	}
}
