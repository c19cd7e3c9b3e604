// hook.h: the C side of binding's two generic hooks (userload.go, evalhook.go; stream/ is what uses
// them). Two callbacks llama.cpp calls on its own threads: set_tensor_data at load (forwarded to Go
// once per tensor) and the graph evaluation callback, which filters nodes in C and crosses into Go
// only for the GET_ROWS that gathers the router's weights with the ffn_moe_topk-N choices (the last
// node before the expert matmuls that still needs the experts' own numbers; Go may rewrite the
// choices there, e.g. to the sniper's slots) or the ffn_norm-N nodes (before a layer's FFN).
#ifndef EXPERTSNIPER_HOOK_H
#define EXPERTSNIPER_HOOK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <llama.h>
#include <gguf.h>

// What the eval callback watches for.
enum es_hook_kind { ES_HOOK_EXPERTS = 1, ES_HOOK_DENSE = 2 };

// es_hook is one context's hook state, on the C heap (llama.cpp keeps a pointer to it).
struct es_hook {
	int kind;           // es_hook_kind
	uintptr_t handle;   // cgo.Handle of the Go hook
	int *abort_flag;    // the context's abort flag: set when Go reports an error
	int failed;         // set once Go reported an error in the current decode
	int prefetch;       // also hand the router's input to Go (goHookRouterInput), for prediction
	int routed_layer;   // the last layer whose choices Go saw, and may have rewritten (-1: none yet)
};

struct es_hook *es_hook_new(int kind, uintptr_t handle, int *abort_flag);
void es_hook_reset(struct es_hook *h);
void es_hook_set_prefetch(struct es_hook *h, int on);

// es_rows_to_float converts ne1 rows of ne0 values of ggml type `type` (row stride nb1) to float32
// with ggml's own conversion; returns 0, or -1 if the type has none.
int es_rows_to_float(const void *data, int type, int64_t ne0, int64_t ne1, size_t nb1, float *out);
ggml_backend_sched_eval_callback es_hook_eval_fn(void);

// es_set_tensor_data is llama_model_init_from_user's callback; user data is a cgo.Handle.
llama_model_set_tensor_data_t es_set_tensor_data_fn(void);

// es_init_from_user calls llama_model_init_from_user with es_set_tensor_data and the handle.
struct llama_model *es_init_from_user(struct gguf_context *g, uintptr_t handle, struct llama_model_params p);

// es_gguf_open reads the metadata and tensor table of fname (no tensor data).
struct gguf_context *es_gguf_open(const char *fname);

// es_gguf_declare adds a tensor to the gguf context's table (data is never read from the file: the
// sniper serves it), e.g. the fused qwen35moe gate_up experts. Returns 0 on success.
int es_gguf_declare(struct gguf_context *g, const char *name, int type, int64_t ne0, int64_t ne1, int64_t ne2);

#endif
