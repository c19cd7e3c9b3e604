package sniper

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
)

// TensorDesc is what the sniper needs to know about one tensor of the GGUF file. The binding or a GGUF
// reader fills it; the sniper does not parse GGUF itself.
type TensorDesc struct {
	Name string
	// Type is the ggml type id (e.g. 0 = F32, 8 = Q8_0); kept for reporting only.
	Type uint32
	// Dims are ggml's ne: Dims[0] is the innermost (row length), Dims[2] the expert count of a 3-D
	// expert tensor.
	Dims []uint64
	// FileOffset is the absolute offset of the tensor's data in the file.
	FileOffset int64
	// Bytes is the size of the tensor's data.
	Bytes int64
}

// Mode selects which tensors are streamed.
type Mode int

const (
	// ModeExperts streams the routed experts blk.N.ffn_{gate,up,down}_exps.weight (sniper mode).
	ModeExperts Mode = iota + 1
	// ModeDense streams each layer's FFN blk.N.ffn_{gate,up,down}.weight (stream mode for dense models).
	ModeDense
)

func (m Mode) String() string {
	switch m {
	case ModeExperts:
		return "sniper"
	case ModeDense:
		return "stream"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Part is one contiguous range of the file that makes up (part of) one expert of a streamed tensor.
type Part struct {
	// FileOffset of expert 0's bytes of this part; expert e starts at FileOffset + e*Stride.
	FileOffset int64
	// Stride is the distance in the file between consecutive experts (= ggml nb[2] of the source).
	Stride int64
	// Len is how many bytes of each expert this part contributes.
	Len int64
	// MemOffset is where, inside the expert's slice of the tensor's memory, this part goes.
	MemOffset int64
}

// StreamedTensor is one tensor whose data the sniper owns and fills expert by expert.
type StreamedTensor struct {
	Name  string
	Layer int
	Type  uint32
	Dims  []uint64
	// Experts is the number of experts (1 for a dense FFN tensor, which is streamed whole).
	Experts int
	// ExpertBytes is the size of one expert's slice in memory (ggml nb[2]; the whole tensor when dense).
	ExpertBytes int64
	// Parts say where each expert's bytes come from in the file. One part whose Stride equals
	// ExpertBytes means the memory mirrors the file (direct reads straight into place); several parts
	// (the synthesized qwen35moe gate_up) go through a bounce buffer.
	Parts []Part
	// FusedInto names the synthesized tensor this one is a source of (qwen35moe gate/up), if any.
	FusedInto string
}

// Mirrors reports whether the tensor's memory is laid out exactly like its bytes in the file.
func (t *StreamedTensor) Mirrors() bool {
	return len(t.Parts) == 1 && t.Parts[0].Stride == t.ExpertBytes && t.Parts[0].Len == t.ExpertBytes
}

// FileRange is the [Offset, Offset+Len) range of the file holding all experts of a mirrored tensor.
func (t *StreamedTensor) FileRange() (off, n int64) {
	p := t.Parts[0]
	return p.FileOffset, p.Stride * int64(t.Experts)
}

// Index lists the streamed tensors of one model file, by name and by layer.
type Index struct {
	Path    string
	Mode    Mode
	Layers  int // 1 + the highest layer number seen among streamed tensors
	Experts int // experts per layer (1 in dense mode)
	byName  map[string]*StreamedTensor
	byLayer [][]*StreamedTensor
}

var (
	expertTensorRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate_up|gate|up|down)_exps\.weight$`)
	denseTensorRE  = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)\.weight$`)
)

// FusedGateUpName is the name of the fused gate+up expert tensor llama.cpp's qwen35moe graph uses.
func FusedGateUpName(layer int) string { return fmt.Sprintf("blk.%d.ffn_gate_up_exps.weight", layer) }

// NewIndex builds the index of the streamed tensors among tensors. With fuseGateUp (qwen35moe) a
// synthesized blk.N.ffn_gate_up_exps.weight is added for every layer that has separate gate and up
// experts: its expert e is gate expert e followed by up expert e, matching how the binding declares it.
func NewIndex(path string, tensors []TensorDesc, mode Mode, fuseGateUp bool) (*Index, error) {
	re := expertTensorRE
	if mode == ModeDense {
		re = denseTensorRE
	} else if mode != ModeExperts {
		return nil, fmt.Errorf("index %q: unknown mode %v", path, mode)
	}
	idx := &Index{Path: path, Mode: mode, byName: map[string]*StreamedTensor{}}
	type gu struct{ gate, up *StreamedTensor }
	pairs := map[int]*gu{}
	for i := range tensors {
		td := &tensors[i]
		m := re.FindStringSubmatch(td.Name)
		if m == nil {
			continue
		}
		layer, _ := strconv.Atoi(m[1])
		st, err := newStreamedTensor(td, layer, mode)
		if err != nil {
			return nil, fmt.Errorf("index %q: %w", path, err)
		}
		if mode == ModeExperts {
			if idx.Experts == 0 {
				idx.Experts = st.Experts
			} else if idx.Experts != st.Experts {
				return nil, fmt.Errorf("index %q: tensor %s has %d experts, others have %d", path, td.Name, st.Experts, idx.Experts)
			}
		} else {
			idx.Experts = 1
		}
		idx.add(st)
		if fuseGateUp && (m[2] == "gate" || m[2] == "up") {
			p := pairs[layer]
			if p == nil {
				p = &gu{}
				pairs[layer] = p
			}
			if m[2] == "gate" {
				p.gate = st
			} else {
				p.up = st
			}
		}
	}
	layers := make([]int, 0, len(pairs))
	for l := range pairs {
		layers = append(layers, l)
	}
	sort.Ints(layers)
	for _, l := range layers {
		p := pairs[l]
		if p.gate == nil || p.up == nil {
			return nil, fmt.Errorf("index %q: layer %d has only one of ffn_gate_exps/ffn_up_exps, cannot fuse", path, l)
		}
		if p.gate.Type != p.up.Type || p.gate.ExpertBytes != p.up.ExpertBytes {
			return nil, fmt.Errorf("index %q: layer %d gate and up experts differ in type or size", path, l)
		}
		p.gate.FusedInto, p.up.FusedInto = FusedGateUpName(l), FusedGateUpName(l)
		dims := append([]uint64(nil), p.gate.Dims...)
		dims[1] *= 2
		idx.add(&StreamedTensor{
			Name: FusedGateUpName(l), Layer: l, Type: p.gate.Type, Dims: dims, Experts: p.gate.Experts,
			ExpertBytes: p.gate.ExpertBytes + p.up.ExpertBytes,
			Parts: []Part{
				{FileOffset: p.gate.Parts[0].FileOffset, Stride: p.gate.ExpertBytes, Len: p.gate.ExpertBytes},
				{FileOffset: p.up.Parts[0].FileOffset, Stride: p.up.ExpertBytes, Len: p.up.ExpertBytes, MemOffset: p.gate.ExpertBytes},
			},
		})
	}
	if len(idx.byName) == 0 {
		return nil, fmt.Errorf("index %q: no tensors to stream in %v mode (expected names like %s)", path, mode, re.String())
	}
	return idx, nil
}

func newStreamedTensor(td *TensorDesc, layer int, mode Mode) (*StreamedTensor, error) {
	if td.Bytes <= 0 || td.FileOffset < 0 {
		return nil, fmt.Errorf("tensor %s: bad size %d or offset %d", td.Name, td.Bytes, td.FileOffset)
	}
	experts := 1
	if mode == ModeExperts {
		if len(td.Dims) < 3 || td.Dims[2] == 0 {
			return nil, fmt.Errorf("tensor %s: expert tensor needs 3 dimensions, has %v", td.Name, td.Dims)
		}
		experts = int(td.Dims[2])
		if td.Bytes%int64(experts) != 0 {
			return nil, fmt.Errorf("tensor %s: %d bytes do not split into %d experts", td.Name, td.Bytes, experts)
		}
	}
	per := td.Bytes / int64(experts)
	return &StreamedTensor{
		Name: td.Name, Layer: layer, Type: td.Type, Dims: append([]uint64(nil), td.Dims...),
		Experts: experts, ExpertBytes: per,
		Parts: []Part{{FileOffset: td.FileOffset, Stride: per, Len: per}},
	}, nil
}

func (idx *Index) add(st *StreamedTensor) {
	idx.byName[st.Name] = st
	for len(idx.byLayer) <= st.Layer {
		idx.byLayer = append(idx.byLayer, nil)
	}
	idx.byLayer[st.Layer] = append(idx.byLayer[st.Layer], st)
	idx.Layers = len(idx.byLayer)
}

// Tensor returns the streamed tensor called name, or nil if that tensor is not streamed.
func (idx *Index) Tensor(name string) *StreamedTensor { return idx.byName[name] }

// Streams reports whether the tensor called name is streamed (its data must not be read at load).
func (idx *Index) Streams(name string) bool { return idx.byName[name] != nil }

// LayerTensors returns the streamed tensors of one layer.
func (idx *Index) LayerTensors(layer int) []*StreamedTensor {
	if layer < 0 || layer >= len(idx.byLayer) {
		return nil
	}
	return idx.byLayer[layer]
}

// Tensors returns every streamed tensor, ordered by layer then name.
func (idx *Index) Tensors() []*StreamedTensor {
	var out []*StreamedTensor
	for _, l := range idx.byLayer {
		out = append(out, l...)
	}
	return out
}

// ExpertBytes is the number of file bytes one expert of layer occupies across the tensors that
// actually get read (a fused tensor counts once, its gate and up sources are not read separately).
func (idx *Index) ExpertBytes(layer int) int64 {
	var n int64
	for _, t := range idx.LayerTensors(layer) {
		if t.FusedInto != "" {
			continue
		}
		n += t.ExpertBytes
	}
	return n
}

// StreamedBytes is the total size of everything the sniper streams.
func (idx *Index) StreamedBytes() int64 {
	var n int64
	for l := range idx.byLayer {
		n += idx.ExpertBytes(l) * int64(idx.Experts)
	}
	return n
}
