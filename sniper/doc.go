// Package sniper streams the weights of a GGUF model from disk into memory it owns, exactly when the
// compute graph needs them: the experts a Mixture-of-Experts router picks (sniper mode) or a dense
// layer's FFN (stream mode). It reads with direct I/O (exact byte ranges, no page cache), keeps hot
// experts in a byte-budgeted cache and counts everything it does.
//
// The package is pure Go and never imports binding/ or "C": the binding hands it tensor descriptions
// from llama.cpp's set_tensor_data callback (Bind) and the router's choices from the graph callback
// (EnsureSlots); the sniper returns memory for the tensors' data and makes the chosen experts
// resident. In sniper mode that memory is an array of expert slots that stay mapped (slots.go), and
// the router's choices are rewritten to the slots their experts are in; in stream mode each layer's
// FFN has its own memory, mirrored from the file.
package sniper
