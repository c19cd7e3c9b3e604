package compat

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/internal/nodetest"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/server"
)

// The official OpenAI SDK for Node against agent serve on the generated model (the same script the
// server package runs against its scripted engine).
func TestOpenAINodeSDKOnTheGeneratedModel(t *testing.T) {
	node, dir := nodetest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	model := testmodels.Path(t, compatModel)
	// The script checks the wrong-key case too, so the server has a key.
	keyed := startOursConfig(t, model, 2048, 2, server.Config{Host: "127.0.0.1", ContextDir: t.TempDir(), APIKey: "k"}).url

	cmd := exec.CommandContext(ctx, node, "sdk_check.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+keyed+"/v1", "OPENAI_API_KEY=k", "SDK_PROMPT=Tell me about the sea")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sdk_check.mjs: %v\n%s%s", err, stderr.String(), out)
	}
	var res struct {
		Chat struct {
			Content      string `json:"content"`
			FinishReason string `json:"finish_reason"`
		} `json:"chat"`
		Stream struct {
			Content      string `json:"content"`
			FinishReason string `json:"finish_reason"`
		} `json:"chat_stream"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	var raw map[string]map[string]any
	json.Unmarshal(out, &raw)
	t.Logf("%s", out)
	if res.Chat.Content == "" || res.Chat.Content != res.Stream.Content || res.Chat.FinishReason != res.Stream.FinishReason {
		t.Errorf("greedy chat through the SDK: plain %q (%s), streamed %q (%s)", res.Chat.Content, res.Chat.FinishReason,
			res.Stream.Content, res.Stream.FinishReason)
	}
	if raw["completion"]["text"] != raw["completion_stream"]["text"] {
		t.Errorf("greedy completion: plain %q, streamed %q", raw["completion"]["text"], raw["completion_stream"]["text"])
	}
}
