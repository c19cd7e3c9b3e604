#include "hook.h"
#include "_cgo_export.h"

#include <string.h>

// ---------------------------------------------------------------- graph evaluation callback

static const char topk_prefix[] = "ffn_moe_topk-";
static const char weights_prefix[] = "ffn_moe_weights-";
static const char norm_prefix[] = "ffn_norm-";

// layer_of returns N for a name "<prefix>N", or -1 if name does not have that form.
static int layer_of(const char *name, const char *prefix, size_t plen) {
	if (strncmp(name, prefix, plen) != 0) return -1;
	const char *p = name + plen;
	if (*p < '0' || *p > '9') return -1;
	int n = 0;
	for (; *p >= '0' && *p <= '9'; p++) n = n * 10 + (*p - '0');
	return *p == '\0' ? n : -1;
}

// es_hook_router_input finds the router's matmul among the ancestors of the topk node (topk is a view
// of argsort of softmax of MUL_MAT(ffn_gate_inp, x)) and hands x to Go (for stream/, which predicts
// the next layer's experts with the router weights it kept at load). x is computed and still live
// here (the expert matmuls that consume it have not run). If the graph has another shape, nothing is
// forwarded.
static void es_hook_router_input(struct es_hook *h, int layer, struct ggml_tensor *topk) {
	static const char suffix[] = "ffn_gate_inp.weight";
	const size_t slen = sizeof(suffix) - 1;
	struct ggml_tensor *n = topk;
	for (int depth = 0; n != NULL && depth < 8; depth++, n = n->src[0]) {
		if (n->op != GGML_OP_MUL_MAT) continue;
		struct ggml_tensor *w = n->src[0], *x = n->src[1];
		size_t wl = strlen(w->name);
		if (wl < slen || strcmp(w->name + wl - slen, suffix) != 0) return;
		if (x == NULL || x->type != GGML_TYPE_F32 || x->data == NULL || w->data == NULL || x->ne[0] != w->ne[0]) return;
		goHookRouterInput(h->handle, layer, (int)topk->ne[0], x->data, x->ne[0], x->ne[1], (int64_t)x->nb[1]);
		return;
	}
}

// topk_layer returns N if t is the router's choice ffn_moe_topk-N, else -1.
static int topk_layer(const struct ggml_tensor *t) {
	return t == NULL ? -1 : layer_of(t->name, topk_prefix, sizeof(topk_prefix) - 1);
}

// Sniper mode: the experts must be resident, and the router's choices rewritten to the slots they are
// in, after the choices gathered the router's weights (ffn_moe_weights-N = GET_ROWS(probs, topk): it
// needs the experts' own numbers) and before the first expert matmul (MUL_MAT_ID(exps, x, topk)). In llama.cpp's graph
// the weights come first; should a graph ever run an expert matmul first, the decode fails instead of
// computing with the wrong experts.
static bool es_hook_eval(struct ggml_tensor *t, bool ask, void *ud) {
	struct es_hook *h = (struct es_hook *)ud;
	int layer;
	if (h->kind == ES_HOOK_EXPERTS) {
		layer = -1;
		if (t->op == GGML_OP_GET_ROWS) {
			// Only the router's weights: later gathers with the same choices (per-expert scales)
			// already see slots.
			int l = layer_of(t->name, weights_prefix, sizeof(weights_prefix) - 1);
			if (l >= 0 && topk_layer(t->src[1]) == l) layer = l;
		}
		if (ask && t->op == GGML_OP_MUL_MAT_ID && !h->failed) {
			int l = topk_layer(t->src[2]);
			if (l >= 0 && l != h->routed_layer) {
				goHookFail(h->handle, l, (char *)"an expert matmul runs before the router's weights are gathered: this graph cannot be streamed");
				h->failed = 1;
				__atomic_store_n(h->abort_flag, 1, __ATOMIC_RELEASE);
			}
			return false;
		}
	} else {
		layer = layer_of(t->name, norm_prefix, sizeof(norm_prefix) - 1);
	}
	if (ask) return layer >= 0;
	if (layer < 0 || h->failed) return true;
	bool ok;
	if (h->kind == ES_HOOK_EXPERTS) {
		struct ggml_tensor *ids = t->src[1];
		if (ids->type != GGML_TYPE_I32) {
			ok = goHookFail(h->handle, layer, (char *)"router ids tensor is not I32");
		} else {
			ok = goHookExperts(h->handle, layer, ids->data, ids->ne[0], ids->ne[1], (int64_t)ids->nb[1]);
			if (ok) h->routed_layer = layer;
			if (ok && h->prefetch) es_hook_router_input(h, layer, ids);
		}
	} else {
		ok = goHookDense(h->handle, layer);
	}
	if (!ok) {
		// Stop the decode: the next graph chunk sees the abort flag and llama_decode returns 2,
		// rolling back this micro-batch. Returning true lets the scheduler reach that check.
		h->failed = 1;
		__atomic_store_n(h->abort_flag, 1, __ATOMIC_RELEASE);
	}
	return true;
}

struct es_hook *es_hook_new(int kind, uintptr_t handle, int *abort_flag) {
	struct es_hook *h = (struct es_hook *)calloc(1, sizeof *h);
	if (!h) return NULL;
	h->kind = kind;
	h->handle = handle;
	h->abort_flag = abort_flag;
	h->routed_layer = -1;
	return h;
}

void es_hook_reset(struct es_hook *h) {
	h->failed = 0;
	h->routed_layer = -1;
}

void es_hook_set_prefetch(struct es_hook *h, int on) { h->prefetch = on; }

int es_rows_to_float(const void *data, int type, int64_t ne0, int64_t ne1, size_t nb1, float *out) {
	const struct ggml_type_traits *tt = ggml_get_type_traits((enum ggml_type)type);
	if (type == GGML_TYPE_F32) {
		for (int64_t r = 0; r < ne1; r++) memcpy(out + r * ne0, (const char *)data + r * nb1, ne0 * sizeof(float));
		return 0;
	}
	if (tt == NULL || tt->to_float == NULL) return -1;
	for (int64_t r = 0; r < ne1; r++) tt->to_float((const char *)data + r * nb1, out + r * ne0, ne0);
	return 0;
}

ggml_backend_sched_eval_callback es_hook_eval_fn(void) { return es_hook_eval; }

// ---------------------------------------------------------------- loading

static void es_set_tensor_data(struct ggml_tensor *t, void *ud) {
	goSetTensorData((uintptr_t)ud, t);
}

llama_model_set_tensor_data_t es_set_tensor_data_fn(void) { return es_set_tensor_data; }

struct llama_model *es_init_from_user(struct gguf_context *g, uintptr_t handle, struct llama_model_params p) {
	return llama_model_init_from_user(g, es_set_tensor_data, (void *)handle, p);
}

struct gguf_context *es_gguf_open(const char *fname) {
	struct gguf_init_params p = { .no_alloc = true, .ctx = NULL };
	return gguf_init_from_file(fname, p);
}

int es_gguf_declare(struct gguf_context *g, const char *name, int type, int64_t ne0, int64_t ne1, int64_t ne2) {
	struct ggml_init_params ip = { .mem_size = ggml_tensor_overhead() + 64, .mem_buffer = NULL, .no_alloc = true };
	struct ggml_context *ctx = ggml_init(ip);
	if (!ctx) return -1;
	struct ggml_tensor *t = ggml_new_tensor_3d(ctx, (enum ggml_type)type, ne0, ne1, ne2);
	ggml_set_name(t, name);
	gguf_add_tensor(g, t); // copies the tensor's description
	ggml_free(ctx);
	return 0;
}
