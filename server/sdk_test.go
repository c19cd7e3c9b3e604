package server

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/internal/nodetest"
	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// requireNodeSDK returns node, with the locked clients installed in testdata/node.
func requireNodeSDK(t *testing.T) string {
	t.Helper()
	node, _ := nodetest.Require(t)
	return node
}

// nodeSDKDir holds package.json and package-lock.json pinning the official OpenAI SDK for Node.
var nodeSDKDir = filepath.Join("testdata", "node")

type sdkUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type sdkResult struct {
	Models []string `json:"models"`
	Chat   struct {
		Content      string    `json:"content"`
		FinishReason string    `json:"finish_reason"`
		Usage        *sdkUsage `json:"usage"`
		Object       string    `json:"object"`
	} `json:"chat"`
	ChatStream struct {
		Content      string    `json:"content"`
		FinishReason string    `json:"finish_reason"`
		Usage        *sdkUsage `json:"usage"`
		Chunks       int       `json:"chunks"`
		FirstRole    string    `json:"first_role"`
	} `json:"chat_stream"`
	Completion struct {
		Text         string    `json:"text"`
		FinishReason string    `json:"finish_reason"`
		Usage        *sdkUsage `json:"usage"`
	} `json:"completion"`
	CompletionStream struct {
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
	} `json:"completion_stream"`
	BadRequest struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	} `json:"bad_request"`
	AuthError struct {
		Status int `json:"status"`
	} `json:"auth_error"`
}

// runSDKCheck runs sdk_check.mjs against baseURL (…/v1) and decodes what it printed.
func runSDKCheck(t *testing.T, baseURL, apiKey, prompt string) sdkResult {
	t.Helper()
	node := requireNodeSDK(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "sdk_check.mjs")
	cmd.Dir = nodeSDKDir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+baseURL, "OPENAI_API_KEY="+apiKey, "SDK_PROMPT="+prompt)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the OpenAI SDK check failed: %v\n%s%s", err, stderr.String(), out)
	}
	var res sdkResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode the SDK check's output %q: %v", out, err)
	}
	return res
}

func TestOfficialOpenAINodeSDKAgainstTheServer(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(2, 4096), func(c *Config) { c.APIKey = "test-key" })
	res := runSDKCheck(t, ts.URL+"/v1", "test-key", "hi from node")

	want := fakeengine.DefaultReply("<|im_start|>user\nhi from node<|im_end|>\n")
	if len(res.Models) != 1 || res.Models[0] != "fake-moe.gguf" {
		t.Errorf("models %v", res.Models)
	}
	if res.Chat.Content != want || res.Chat.FinishReason != "stop" || res.Chat.Object != "chat.completion" ||
		res.Chat.Usage == nil || res.Chat.Usage.CompletionTokens == 0 {
		t.Errorf("chat %+v, want content %q", res.Chat, want)
	}
	if res.ChatStream.Content != want || res.ChatStream.FinishReason != "stop" || res.ChatStream.FirstRole != "assistant" ||
		res.ChatStream.Usage == nil || res.ChatStream.Usage.TotalTokens != res.Chat.Usage.TotalTokens {
		t.Errorf("chat stream %+v, want the same content and usage as the plain chat %+v", res.ChatStream, res.Chat.Usage)
	}
	if res.Completion.Text != "Hello! You said: Once upon" || res.Completion.FinishReason != "length" ||
		res.CompletionStream.Text != res.Completion.Text || res.CompletionStream.FinishReason != "length" {
		t.Errorf("completions %+v / stream %+v", res.Completion, res.CompletionStream)
	}
	if res.BadRequest.Status != 400 || !strings.Contains(res.BadRequest.Message, "messages") {
		t.Errorf("bad request %+v", res.BadRequest)
	}
	if res.AuthError.Status != 401 {
		t.Errorf("auth error %+v", res.AuthError)
	}
}
