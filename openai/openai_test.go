package openai

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/engine"
)

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFromChatRequestAppliesDefaultsAndOverrides(t *testing.T) {
	var req ChatCompletionRequest
	body := `{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hel"},{"type":"text","text":"lo"}]}],
		"max_completion_tokens":7,"max_tokens":99,"stop":"END","temperature":0,"top_k":5,"seed":42,"stream":true,"stream_options":{"include_usage":true},"id_slot":1}`
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	call, err := FromChatRequest(req, DefaultSampling)
	if err != nil {
		t.Fatal(err)
	}
	if len(call.Messages) != 2 || call.Messages[0].Role != "system" || call.Messages[1].Content != "hel\nlo" {
		t.Fatalf("messages %+v", call.Messages)
	}
	r := call.Request
	if r.MaxTokens != 7 || len(r.Stop) != 1 || r.Stop[0] != "END" || r.Slot != 1 || !call.Stream || !call.IncludeUsage {
		t.Fatalf("request %+v call %+v", r, call)
	}
	want := DefaultSampling
	want.Temperature, want.TopK, want.Seed, want.FixedSeed = 0, 5, 42, true
	if r.Sampling != want {
		t.Fatalf("sampling %+v, want %+v", r.Sampling, want)
	}
}

func TestFromChatRequestRejectsBadValues(t *testing.T) {
	for _, body := range []string{
		`{"messages":[]}`,
		`{"messages":[{"role":"robot","content":"x"}]}`,
		`{"messages":[{"role":"user","content":"x"}],"n":3}`,
		`{"messages":[{"role":"user","content":"x"}],"max_tokens":-5}`,
		`{"messages":[{"role":"user","content":"x"}],"temperature":-1}`,
		`{"messages":[{"role":"user","content":"x"}],"min_p":1.5}`,
		`{"messages":[{"role":"user","content":"x"}],"presence_penalty":9}`,
		`{"messages":[{"role":"user","content":"x"}],"seed":99999999999}`,
		`{"messages":[{"role":"user","content":"x"}],"stop":[""]}`,
	} {
		var req ChatCompletionRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		_, err := FromChatRequest(req, DefaultSampling)
		var re *RequestError
		if !errors.As(err, &re) {
			t.Errorf("%s: error %v, want a RequestError", body, err)
		}
	}
	for _, body := range []string{`{"messages":[{"role":"user","content":7}]}`, `{"stop":{"a":1}}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`} {
		var req ChatCompletionRequest
		err := json.Unmarshal([]byte(body), &req)
		var re *RequestError
		if !errors.As(err, &re) {
			t.Errorf("%s: decode error %v, want a RequestError", body, err)
		}
	}
}

func TestMaxTokensMinusOneMeansNoLimit(t *testing.T) {
	n := -1
	call, err := FromCompletionRequest(CompletionRequest{Prompt: StringOrList{"x"}, MaxTokens: &n}, DefaultSampling)
	if err != nil || call.Request.MaxTokens != 0 {
		t.Fatalf("max_tokens -1: %+v, %v", call.Request, err)
	}
}

func TestStreamChunksHaveLlamaServersShape(t *testing.T) {
	meta := ResponseMeta{ID: "chatcmpl-x", Model: "m", Created: 1, Fingerprint: "fp"}
	role := mustJSON(t, RoleChunk(meta))
	if !strings.Contains(role, `"delta":{"role":"assistant","content":null}`) || !strings.Contains(role, `"finish_reason":null`) {
		t.Fatalf("role chunk %s", role)
	}
	res := engine.Result{Text: "ab", FinishReason: "length", Timings: engine.Timings{PromptTokens: 3, CachedTokens: 2, PredictedTokens: 2, PredictedMS: 10}}
	chunks := ToStreamChunks(meta, []string{"a", "b"}, res, true)
	if len(chunks) != 4 {
		t.Fatalf("%d chunks, want 2 content, finish, usage", len(chunks))
	}
	if s := mustJSON(t, chunks[0]); !strings.Contains(s, `"delta":{"content":"a"}`) {
		t.Fatalf("content chunk %s", s)
	}
	// With include_usage the usage is on the usage-only chunk alone (never twice: clients add them up).
	finish := mustJSON(t, chunks[2])
	if !strings.Contains(finish, `"finish_reason":"length","index":0,"delta":{}`) || strings.Contains(finish, `"usage"`) {
		t.Fatalf("finish chunk %s", finish)
	}
	if s := mustJSON(t, chunks[3]); !strings.Contains(s, `"choices":[]`) ||
		!strings.Contains(s, `"usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":2}}`) {
		t.Fatalf("usage chunk %s", s)
	}
	// Without it, the finish chunk is the last and carries it.
	if s := mustJSON(t, FinishChunks(meta, res, false)[0]); !strings.Contains(s, `"usage":{"completion_tokens":2`) {
		t.Fatalf("finish chunk without include_usage %s", s)
	}
	if tm := ToTimings(res.Timings); tm.PredictedPerTokenMS != 5 {
		t.Fatalf("timings %+v", tm)
	}
}

func TestNativeStopTypes(t *testing.T) {
	for _, c := range []struct {
		res  engine.Result
		want string
	}{
		{engine.Result{FinishReason: "length"}, "limit"},
		{engine.Result{FinishReason: "stop", StoppingWord: "###"}, "word"},
		{engine.Result{FinishReason: "stop"}, "eos"},
	} {
		if got := StopType(c.res); got != c.want {
			t.Errorf("%+v: %q, want %q", c.res, got, c.want)
		}
	}
	var p NativePrompt
	if err := json.Unmarshal([]byte(`[1,2,3]`), &p); err != nil || !p.IsTokens || len(p.Tokens) != 3 {
		t.Fatalf("token prompt: %+v %v", p, err)
	}
	if err := json.Unmarshal([]byte(`{"x":1}`), &p); err == nil {
		t.Fatal("an object prompt must be refused")
	}
}

// "seed": 0 is a seed like any other (llama-server's behaviour); -1 and 4294967295 ask for a random one.
func TestSeedZeroIsASeed(t *testing.T) {
	for _, c := range []struct {
		seed  int64
		fixed bool
		shown uint32
	}{{0, true, 0}, {7, true, 7}, {-1, false, math.MaxUint32}, {math.MaxUint32, false, math.MaxUint32}} {
		s, err := SamplingParams{Seed: &c.seed}.ToEngine(DefaultSampling)
		if err != nil {
			t.Fatal(err)
		}
		if s.FixedSeed != c.fixed || (c.fixed && s.Seed != uint32(c.seed)) {
			t.Errorf("seed %d: %+v", c.seed, s)
		}
		if got := ToGenerationSettings(engine.Request{Sampling: s}, false).Seed; got != c.shown {
			t.Errorf("seed %d is shown as %d, want %d", c.seed, got, c.shown)
		}
	}
	if DefaultSampling.FixedSeed {
		t.Error("a request without a seed must get a random one")
	}
}
