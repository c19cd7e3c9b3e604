// repack.h: llama.cpp's repacked CPU weight layouts (CPU_REPACK, AMX, ...: the CPU device's "extra"
// buffer types) for tensors whose memory we own. llama_model_init_from_user places every tensor in
// the plain CPU buffer whatever use_extra_bufts says (docs/notes/repack-probe/FINDINGS.md, Q5), so
// the loader re-homes them: a tensor whose ->buffer is a small buffer of the extra type (the
// "carrier") and whose ->extra is that type's traits computes with its kernels wherever ->data
// points. Every conversion is ggml's own (ggml_backend_tensor_set through the carrier); this file
// only forwards calls. Hazards it guards: a carrier of size 0 makes tensor_set segfault, and
// tensor_set through the carrier on a tensor without traits segfaults (->extra NULL computes wrong).
#ifndef EXPERTSNIPER_REPACK_H
#define EXPERTSNIPER_REPACK_H

#include <stdint.h>
#include <stddef.h>
#include <ggml.h>
#include <ggml-backend.h>

// es_repack_init finds the CPU device's extra buffer types and allocates a 4 KiB carrier buffer in
// each (once per process; they live as long as it). Returns how many there are (0: none, the plain
// layout is all there is).
int es_repack_init(void);

// es_repack_choose reproduces llama.cpp's choice of buffer type for a weight (weight_buft_supported):
// the first extra buffer type whose device supports the weight's op (MUL_MAT_ID for a 3-D expert
// tensor when id is set, else MUL_MAT) and whose buffer gives a [ne0, ne1] tensor of this type
// repack traits. On success it stores the carrier and traits and returns 0; -1: the plain layout.
int es_repack_choose(int type, int64_t ne0, int64_t ne1, int64_t ne2, int id,
	ggml_backend_buffer_t *carrier, void **traits);

// es_repack_name is the name of the carrier's buffer type (e.g. "CPU_REPACK").
const char *es_repack_name(ggml_backend_buffer_t carrier);

// es_repack_into converts nbytes of raw rows (ne1 rows of ne0 values of type) at src into the
// repacked layout at dst (nbytes too; dst and src must not overlap), through a header on the stack
// that the carrier and traits describe. Returns 0, or -1 if nbytes is not whole rows or a pointer is
// missing (nothing is written then).
int es_repack_into(ggml_backend_buffer_t carrier, void *traits, int type, int64_t ne0,
	void *dst, const void *src, size_t nbytes);

#endif
