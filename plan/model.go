// Package plan describes a GGUF model in the terms that matter for running it (parameters total and
// active, experts and their bytes, quantization types) and plans its memory for a RAM budget: what
// stays pinned, what the expert cache gets, how many bytes each token reads from disk and what that
// means for speed. What is streamed and what is pinned is decided by the sniper's index, so the plan
// shows the numbers the sniper actually reads.
package plan

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
)

// TypeCount is one line of the quantization histogram.
type TypeCount struct {
	Type       string `json:"type"`
	Tensors    int    `json:"tensors"`
	Parameters int64  `json:"parameters"`
	Bytes      int64  `json:"bytes"`
}

// Model is what a plan needs to know about a model file.
type Model struct {
	Path         string `json:"path"`
	Parts        int    `json:"parts"` // files of a split model (1 otherwise)
	Name         string `json:"name"`  // general.name, or the file name
	Architecture string `json:"architecture"`
	FileSize     int64  `json:"file_size"`
	// TensorBytes is the size of all tensor data (what an in-RAM load allocates for weights).
	TensorBytes int64 `json:"tensor_bytes"`

	Parameters       int64 `json:"parameters"`
	ActiveParameters int64 `json:"active_parameters"` // per token: all but the unused routed experts

	Layers        int  `json:"layers"`
	ContextLength int  `json:"context_length"` // trained context (metadata)
	Embedding     int  `json:"embedding_length"`
	Vocab         int  `json:"vocab_size"`
	Heads         int  `json:"head_count"`
	KVHeads       int  `json:"head_count_kv"`
	KeyLength     int  `json:"key_length"`
	ValueLength   int  `json:"value_length"`
	ChatTemplate  bool `json:"chat_template"`
	// AttentionLayers have a KV cache; the others (qwen35moe's Gated DeltaNet) keep a fixed-size
	// recurrent state per sequence instead.
	AttentionLayers     int   `json:"attention_layers"`
	RecurrentStateBytes int64 `json:"recurrent_state_bytes"` // per sequence, all recurrent layers
	SSMInner            int   `json:"ssm_inner_size"`        // Gated DeltaNet value width (0 without)

	MoE           bool    `json:"moe"`
	Experts       int     `json:"expert_count"`
	ExpertsUsed   int     `json:"expert_used_count"`
	SharedExperts bool    `json:"shared_experts"`
	ExpertFF      int     `json:"expert_feed_forward_length"`
	FeedForward   int     `json:"feed_forward_length"`
	FusedGateUp   bool    `json:"fused_gate_up"`          // qwen35moe: the graph reads gate+up of an expert as one slice
	ExpertBytes   []int64 `json:"expert_bytes_per_layer"` // bytes of one expert (gate+up+down slices) per layer
	// StreamedBytes is everything that sniper (MoE) or stream (dense) mode reads from disk on demand;
	// PinnedBytes is the rest of the tensor data, loaded once and kept in RAM.
	StreamedBytes int64 `json:"streamed_bytes"`
	PinnedBytes   int64 `json:"pinned_bytes"`
	// RepackStreamed: some streamed tensors have a type llama.cpp b11669's CPU kernels repack (Q4_0,
	// Q4_K, IQ4_NL), so when they are converted (Options.Repack) their reads are staged
	// (sniper.StagingBytes). Whether this CPU has the kernels is known only at load; the plan counts
	// the staging either way.
	RepackStreamed bool `json:"repack_streamed"`
	// LayerStreamBytes is, per layer, what one token reads at 0% cache hits: ExpertsUsed experts for
	// MoE, the whole FFN for dense models.
	LayerStreamBytes []int64 `json:"layer_stream_bytes"`
	// LayerBytes are all the tensor bytes of each repeating layer (blk.N.*), OutputBytes those of the
	// output layer (output.*, output_norm.*), InputBytes the rest (token embeddings): how a model
	// spread over devices divides (llama.cpp places whole layers; the input stays local).
	LayerBytes  []int64 `json:"layer_bytes"`
	OutputBytes int64   `json:"output_bytes"`
	InputBytes  int64   `json:"input_bytes"`

	Types []TypeCount `json:"types"`
}

// expertName matches the routed expert tensors, as the sniper names them.
var expertName = regexp.MustCompile(`^blk\.\d+\.ffn_(gate_up|gate|up|down)_exps\.weight$`)

// Open reads the GGUF header of path and analyses it. For the first part of a split model
// (NAME-00001-of-0000N.gguf), the tensors of all parts are counted.
func Open(path string) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	count, _ := f.Uint("split.count")
	if count <= 1 {
		return Analyze(path, f)
	}
	parts, err := splitParts(path, int(count))
	if err != nil {
		return nil, err
	}
	tensors := append([]gguf.TensorInfo(nil), f.Tensors...)
	size := f.FileSize
	for i, p := range parts[1:] {
		pf, err := gguf.Open(p)
		if err != nil {
			return nil, fmt.Errorf("analyse split model %q: %w", path, err)
		}
		if no, _ := pf.Uint("split.no"); no != uint64(i+1) {
			return nil, fmt.Errorf("analyse split model %q: %s says it is part %d, expected %d", path, p, no+1, i+2)
		}
		tensors = append(tensors, pf.Tensors...)
		size += pf.FileSize
	}
	m, err := analyze(path, f, tensors)
	if err != nil {
		return nil, err
	}
	m.FileSize = size
	m.Parts = len(parts)
	return m, nil
}

// splitParts names the n parts of the split model whose first part is first.
func splitParts(first string, n int) ([]string, error) {
	re := regexp.MustCompile(`^(.*)-00001-of-(\d{5})\.gguf$`)
	mm := re.FindStringSubmatch(first)
	if mm == nil {
		return nil, fmt.Errorf("analyse %q: the metadata says it is part of a split model of %d parts, but the name is not NAME-00001-of-%05d.gguf", first, n, n)
	}
	var parts []string
	for i := 1; i <= n; i++ {
		p := fmt.Sprintf("%s-%05d-of-%05d.gguf", mm[1], i, n)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("analyse split model %q: part %d: %w", first, i, err)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// Analyze describes an already parsed GGUF file.
func Analyze(path string, f *gguf.File) (*Model, error) {
	return analyze(path, f, f.Tensors)
}

// analyze describes a model whose metadata is in f and whose tensors are tensors (all parts).
func analyze(path string, f *gguf.File, tensors []gguf.TensorInfo) (*Model, error) {
	arch := f.Architecture()
	if arch == "" {
		return nil, fmt.Errorf("analyse %q: no general.architecture in the metadata", path)
	}
	archUint := func(key string) int {
		v, _ := f.ArchUint(key)
		return int(v)
	}
	m := &Model{
		Path: path, Parts: 1, Architecture: arch, FileSize: f.FileSize,
		Layers: archUint("block_count"), ContextLength: archUint("context_length"),
		Embedding: archUint("embedding_length"), Heads: archUint("attention.head_count"),
		KVHeads: archUint("attention.head_count_kv"), Experts: archUint("expert_count"),
		ExpertsUsed: archUint("expert_used_count"), ExpertFF: archUint("expert_feed_forward_length"),
	}
	if m.Layers <= 0 {
		return nil, fmt.Errorf("analyse %q: %s.block_count is missing or zero", path, arch)
	}
	// llama.cpp divides by the head count (and plans below do too); a zero that is really in the file
	// must fail here with its name, not as a crash in a streamed load.
	// (A per-layer array is not an integer here; llama.cpp checks its length and values itself.)
	if n, ok := f.ArchUint("attention.head_count"); ok && n == 0 {
		return nil, fmt.Errorf("analyse %q: %s.attention.head_count is 0", path, arch)
	}
	// Multi-token-prediction layers (counted in block_count) are skipped by llama.cpp's loader, so a
	// file may leave them out.
	nextn, _ := f.ArchUint("nextn_predict_layers")
	if err := checkLayerTensors(tensors, m.Layers, m.Layers-int(min(nextn, uint64(m.Layers)))); err != nil {
		return nil, fmt.Errorf("analyse %q: %w", path, err)
	}
	m.Name, _ = f.String("general.name")
	if m.Name == "" {
		m.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if m.KVHeads == 0 {
		m.KVHeads = m.Heads // llama.cpp's default when the key is absent
	}
	headDim := 0
	if m.Heads > 0 {
		headDim = m.Embedding / m.Heads
	}
	m.KeyLength, m.ValueLength = archUint("attention.key_length"), archUint("attention.value_length")
	if m.KeyLength == 0 {
		m.KeyLength = headDim
	}
	if m.ValueLength == 0 {
		m.ValueLength = headDim
	}
	m.FeedForward = archUint("feed_forward_length")
	if m.ExpertFF == 0 && m.Experts > 0 {
		m.ExpertFF = archUint("feed_forward_length") // olmoe keeps the expert length there
	}
	if v, ok := f.Get("tokenizer.ggml.tokens"); ok {
		if toks, ok := v.([]string); ok {
			m.Vocab = len(toks)
		}
	}
	if tmpl, ok := f.String("tokenizer.chat_template"); ok && strings.TrimSpace(tmpl) != "" {
		m.ChatTemplate = true
	}
	m.AttentionLayers, m.RecurrentStateBytes = attentionLayers(f, m.Layers)
	if m.RecurrentStateBytes > 0 {
		m.SSMInner = archUint("ssm.inner_size")
	}

	descs := make([]sniper.TensorDesc, len(tensors))
	for i, t := range tensors {
		dims := make([]uint64, len(t.Dims))
		for j, d := range t.Dims {
			dims[j] = uint64(d)
		}
		// Offsets only matter for reading; across split parts they are not comparable anyway.
		descs[i] = sniper.TensorDesc{Name: t.Name, Type: uint32(t.Type), Dims: dims, FileOffset: f.TensorFileOffset(t), Bytes: t.Bytes()}
		if expertName.MatchString(t.Name) {
			m.MoE = true
		}
	}
	mode := sniper.ModeDense
	if m.MoE {
		mode = sniper.ModeExperts
	}
	idx, err := sniper.NewIndex(path, descs, mode, sniper.NeedsFusedGateUp(f))
	if err != nil {
		return nil, fmt.Errorf("analyse %q: %w", path, err)
	}
	m.FusedGateUp = m.MoE && sniper.NeedsFusedGateUp(f)
	if m.MoE && idx.Experts != m.Experts {
		return nil, fmt.Errorf("analyse %q: %s.expert_count is %d but the expert tensors hold %d experts",
			path, arch, m.Experts, idx.Experts)
	}
	if m.MoE && (m.ExpertsUsed <= 0 || m.ExpertsUsed > m.Experts) {
		return nil, fmt.Errorf("analyse %q: %s.expert_used_count %d is not between 1 and %d", path, arch, m.ExpertsUsed, m.Experts)
	}

	types := map[gguf.Type]*TypeCount{}
	for _, t := range tensors {
		n, b := t.Elements(), t.Bytes()
		m.Parameters += n
		m.TensorBytes += b
		tc := types[t.Type]
		if tc == nil {
			tc = &TypeCount{Type: t.Type.String()}
			types[t.Type] = tc
		}
		tc.Tensors++
		tc.Parameters += n
		tc.Bytes += b
		if strings.Contains(t.Name, "_shexp.") {
			m.SharedExperts = true
		}
		if m.MoE && idx.Streams(t.Name) {
			// Only ExpertsUsed of the Experts slices take part in a token.
			m.ActiveParameters += n / int64(m.Experts) * int64(m.ExpertsUsed)
		} else {
			m.ActiveParameters += n
		}
	}
	for _, tc := range types {
		m.Types = append(m.Types, *tc)
	}
	sort.Slice(m.Types, func(i, j int) bool {
		if m.Types[i].Bytes != m.Types[j].Bytes {
			return m.Types[i].Bytes > m.Types[j].Bytes
		}
		return m.Types[i].Type < m.Types[j].Type
	})

	// Streamed vs pinned, from the file's own tensors: a synthesized fused tensor is not in the file
	// (its bytes are the gate and up tensors'), so sum the file tensors the index streams.
	for _, t := range tensors {
		if idx.Streams(t.Name) {
			m.StreamedBytes += t.Bytes()
			switch t.Type {
			case gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeIQ4_NL:
				m.RepackStreamed = true
			}
		}
	}
	m.PinnedBytes = m.TensorBytes - m.StreamedBytes
	m.LayerBytes = make([]int64, m.Layers)
	for _, t := range tensors {
		if sm := layerTensorName.FindStringSubmatch(t.Name); sm != nil {
			if l, err := strconv.Atoi(sm[1]); err == nil && l < m.Layers {
				m.LayerBytes[l] += t.Bytes()
				continue
			}
		}
		if strings.HasPrefix(t.Name, "output.") || strings.HasPrefix(t.Name, "output_norm.") {
			m.OutputBytes += t.Bytes()
		} else {
			m.InputBytes += t.Bytes()
		}
	}
	m.ExpertBytes = make([]int64, m.Layers)
	m.LayerStreamBytes = make([]int64, m.Layers)
	for l := 0; l < m.Layers; l++ {
		b := idx.ExpertBytes(l)
		if m.MoE {
			m.ExpertBytes[l] = b
			m.LayerStreamBytes[l] = b * int64(m.ExpertsUsed)
		} else {
			m.LayerStreamBytes[l] = b
		}
	}
	if !m.MoE {
		m.ExpertBytes = nil
	}
	return m, nil
}

var layerTensorName = regexp.MustCompile(`^blk\.(\d+)\.`)

// checkLayerTensors: every layer the metadata declares has tensors in the file, no tensor belongs to
// a layer beyond them, and every layer with experts has its router. Streamed loads build the graph
// from the metadata and fill only what the file has, so a file short of a layer or a router would
// otherwise fail late (in the middle of a decode) or compute on a neutral stand-in.
// Only the first required layers must have tensors.
func checkLayerTensors(tensors []gguf.TensorInfo, layers, required int) error {
	seen := make([]bool, layers)
	experts := make([]bool, layers)
	routers := make([]bool, layers)
	for _, t := range tensors {
		mm := layerTensorName.FindStringSubmatch(t.Name)
		if mm == nil {
			continue
		}
		l, err := strconv.Atoi(mm[1])
		if err != nil || l >= layers {
			return fmt.Errorf("tensor %s belongs to layer %s, but block_count is %d", t.Name, mm[1], layers)
		}
		seen[l] = true
		if expertName.MatchString(t.Name) {
			experts[l] = true
		}
		if strings.HasSuffix(t.Name, ".ffn_gate_inp.weight") {
			routers[l] = true
		}
	}
	for l := range layers {
		if !seen[l] && l < required {
			return fmt.Errorf("block_count is %d but the file has no tensors for layer %d", layers, l)
		}
		if experts[l] && !routers[l] {
			return fmt.Errorf("layer %d has expert tensors but no router (blk.%d.ffn_gate_inp.weight)", l, l)
		}
	}
	return nil
}

// attentionLayers counts the layers with a KV cache and sizes the recurrent state of the others.
// qwen35moe (and qwen3next) put full attention on every full_attention_interval-th layer and Gated
// DeltaNet on the rest; DeltaNet keeps a convolution state and a state matrix per value head (F32).
func attentionLayers(f *gguf.File, layers int) (int, int64) {
	interval, ok := f.ArchUint("full_attention_interval")
	if !ok || interval <= 1 {
		return layers, 0
	}
	attn := 0
	for i := 0; i < layers; i++ {
		if (i+1)%int(interval) == 0 {
			attn++
		}
	}
	kernel, _ := f.ArchUint("ssm.conv_kernel")
	state, _ := f.ArchUint("ssm.state_size")
	groups, _ := f.ArchUint("ssm.group_count")
	inner, _ := f.ArchUint("ssm.inner_size")
	convChannels := 2*state*groups + inner
	perLayer := (kernel-1)*convChannels + state*inner // llama.cpp n_embd_r() + n_embd_s()
	return attn, int64(perLayer) * 4 * int64(layers-attn)
}

// MeanExpertBytes is the average bytes of one expert over the layers (0 for dense models).
func (m *Model) MeanExpertBytes() int64 {
	if len(m.ExpertBytes) == 0 {
		return 0
	}
	var s int64
	for _, b := range m.ExpertBytes {
		s += b
	}
	return s / int64(len(m.ExpertBytes))
}

// MaxLayerBytes is the largest streamed working set held beyond the cache: all experts of one layer
// (a prefill micro-batch can touch every one of them), or for a dense model two layers' FFNs (the
// one computing and the next one, read ahead meanwhile: sniper/dense.go).
func (m *Model) MaxLayerBytes() int64 {
	var mx int64
	for l := range m.LayerStreamBytes {
		b := m.LayerStreamBytes[l]
		if m.MoE {
			b = m.ExpertBytes[l] * int64(m.Experts)
		}
		mx = max(mx, b)
	}
	if !m.MoE {
		return 2 * mx
	}
	return mx
}

// TokenReadBytes is what one token reads from disk at 0% cache hits.
func (m *Model) TokenReadBytes() int64 {
	var s int64
	for _, b := range m.LayerStreamBytes {
		s += b
	}
	return s
}
