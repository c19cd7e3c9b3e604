// probe5.c — Q5: llama_model_init_from_user with use_extra_bufts=true. Where do *_exps land, and what
// must set_tensor_data do? Modes:
//   probe5 MODEL stock         llama_model_load_from_file, llama.cpp defaults (use_extra_bufts=true, mmap)
//   probe5 MODEL stock-norepack  same with use_extra_bufts=false
//   probe5 MODEL set           init_from_user(use_extra_bufts=true), callback: ggml_backend_tensor_set(file bytes)
//   probe5 MODEL raw           init_from_user(use_extra_bufts=true), callback: memcpy(t->data, file bytes) (no conversion)
//   probe5 MODEL stage         init_from_user(use_extra_bufts=true), *_exps: per-expert staging tensor in t's buft,
//                              tensor_set each expert, memcpy into OUR memory; t->data repointed there (the sniper's shape)
// Prints buffer type per *_exps tensor of layer 0 and an FNV hash of the logits of a 6-token prompt (all positions).
#include <llama.h>
#include <gguf.h>
#include <ggml.h>
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static struct gguf_context *G;
static FILE *F;
static const char *mode;
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void)l; (void)u; if (getenv("PROBE_LOG")) fputs(t, stderr); }

static void *file_bytes(const char *name, size_t n) {
	int64_t id = gguf_find_tensor(G, name);
	if (id < 0) return NULL;
	void *b = malloc(n);
	fseek(F, (long)(gguf_get_data_offset(G) + gguf_get_tensor_offset(G, id)), SEEK_SET);
	if (fread(b, 1, n, F) != n) { printf("short read %s\n", name); exit(1); }
	return b;
}

// rehome: llama.cpp put t in the plain CPU buffer (init_from_user ignores use_extra_bufts). If the
// CPU_REPACK buft has traits for t (its init_tensor sets ->extra), convert each expert (each 2-D slice)
// through a staging tensor allocated in CPU_REPACK, copy the repacked bytes into our own memory, and make
// t look like a CPU_REPACK tensor: ->buffer = a CPU_REPACK buffer, ->extra = the traits, ->data = ours.
static ggml_backend_buffer_type_t REPACK;
static ggml_backend_buffer_t REPACK_BUF; // one small buffer of that type, only to carry the buft
static int n_rehomed;
static int rehome(struct ggml_tensor *t, void *b) {
	if (!REPACK) return 0;
	struct ggml_init_params ip = { .mem_size = ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
	struct ggml_context *ctx = ggml_init(ip);
	struct ggml_tensor *s = ggml_new_tensor_3d(ctx, t->type, t->ne[0], t->ne[1], 1);
	ggml_backend_buffer_t sb = ggml_backend_alloc_ctx_tensors_from_buft(ctx, REPACK);
	if (!sb || s->extra == NULL) { if (sb) ggml_backend_buffer_free(sb); ggml_free(ctx); return 0; }
	size_t per = t->nb[2], n = ggml_nbytes(t);
	unsigned char *own = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
	for (int64_t e = 0; e < t->ne[2]; e++) {
		ggml_backend_tensor_set(s, (char *)b + e * per, 0, per);
		memcpy(own + e * per, s->data, per);
	}
	if (!REPACK_BUF) REPACK_BUF = sb; else ggml_backend_buffer_free(sb);
	t->extra = s->extra;
	t->buffer = REPACK_BUF;
	t->data = own;
	n_rehomed++;
	ggml_free(ctx);
	return 1;
}

static void cb(struct ggml_tensor *t, void *ud) {
	(void)ud;
	size_t n = ggml_nbytes(t);
	ggml_backend_buffer_type_t bt = ggml_backend_buffer_get_type(t->buffer);
	int exps = strstr(t->name, "_exps") != NULL;
	if (exps && strncmp(t->name, "blk.0.", 6) == 0)
		printf("  %-28s %-6s ne=[%lld,%lld,%lld] buft=%s extra=%p\n", t->name, ggml_type_name(t->type), (long long)t->ne[0],
			(long long)t->ne[1], (long long)t->ne[2], ggml_backend_buft_name(bt), t->extra);
	void *b = file_bytes(t->name, n);
	if (!b) { // optional tensor the file lacks: biases 0, scales 1 (F32)
		float *f = calloc(n / 4, 4);
		if (strstr(t->name, "scale")) for (size_t i = 0; i < n / 4; i++) f[i] = 1.0f;
		ggml_backend_tensor_set(t, f, 0, n);
		free(f);
		return;
	}
	if (!strcmp(mode, "rehome") && strcmp(t->name, "token_embd.weight") != 0 && rehome(t, b)) {
		// done: t now lives in CPU_REPACK semantics with data in our memory
	} else if (!strcmp(mode, "raw")) {
		memcpy(t->data, b, n);
	} else if (!strcmp(mode, "stage") && exps) {
		// per-expert staging tensor in the same buffer type, converted through ggml; result into our memory
		struct ggml_init_params ip = { .mem_size = ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
		struct ggml_context *ctx = ggml_init(ip);
		struct ggml_tensor *s = ggml_new_tensor_3d(ctx, t->type, t->ne[0], t->ne[1], 1);
		ggml_backend_buffer_t sb = ggml_backend_alloc_ctx_tensors_from_buft(ctx, bt);
		size_t per = t->nb[2];
		unsigned char *own = aligned_alloc(4096, (n + 4095) / 4096 * 4096); // leaked on purpose (lives with the model)
		for (int64_t e = 0; e < t->ne[2]; e++) {
			ggml_backend_tensor_set(s, (char *)b + e * per, 0, per);
			memcpy(own + e * per, s->data, per);
		}
		if (s->extra != t->extra) printf("  %s: staging extra %p != tensor extra %p\n", t->name, s->extra, t->extra);
		t->data = own; // ->buffer and ->extra stay those llama.cpp gave the tensor
		ggml_backend_buffer_free(sb);
		ggml_free(ctx);
	} else {
		ggml_backend_tensor_set(t, b, 0, n);
	}
	free(b);
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) return 2;
	const char *path = argv[1];
	static char modebuf[64];
	snprintf(modebuf, sizeof modebuf, "%s", argv[2]);
	int nohost = strstr(modebuf, "-nohost") != NULL, nommap = strstr(modebuf, "-nommap") != NULL;
	char *dash = strstr(modebuf, "-no"); if (dash && strcmp(dash, "-norepack")) *dash = 0;
	mode = modebuf;
	llama_log_set(quiet, NULL);
	ggml_backend_load_all_from_path("/usr/lib/x86_64-linux-gnu/ggml/backends0");
	struct llama_model_params mp = llama_model_default_params();
	struct llama_model *m;
	mp.no_host = nohost;
	if (nommap) mp.load_mode = LLAMA_LOAD_MODE_NONE;
	if (!strncmp(mode, "stock", 5)) {
		mp.use_extra_bufts = strcmp(mode, "stock-norepack") != 0;
		m = llama_model_load_from_file(path, mp);
	} else {
		struct gguf_init_params gp = { .no_alloc = true, .ctx = NULL };
		G = gguf_init_from_file(path, gp);
		F = fopen(path, "rb");
		mp.use_extra_bufts = true;
		if (!strcmp(mode, "rehome")) {
			ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
			ggml_backend_dev_get_extra_bufts_t f = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
				ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
			for (ggml_backend_buffer_type_t *p = f(dev); p && *p; p++)
				if (!strcmp(ggml_backend_buft_name(*p), "CPU_REPACK")) REPACK = *p;
			mp.use_extra_bufts = false;
		}
		m = llama_model_init_from_user(G, cb, NULL, mp);
		if (!strcmp(mode, "rehome")) printf("  rehomed %d tensors into CPU_REPACK layout\n", n_rehomed);
	}
	if (!m) { printf("load failed\n"); return 1; }
	struct llama_context_params cp = llama_context_default_params();
	cp.n_ctx = 256; cp.n_batch = 64; cp.n_threads = 2; cp.n_threads_batch = 2;
	struct llama_context *ctx = llama_init_from_model(m, cp);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	int nv = llama_vocab_n_tokens(v);
	llama_token toks[6] = { 1, 17, 42, 100, 7, 300 % nv };
	struct llama_batch b = llama_batch_init(6, 0, 1);
	for (int i = 0; i < 6; i++) { b.token[i] = toks[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1; }
	b.n_tokens = 6;
	if (llama_decode(ctx, b)) { printf("decode failed\n"); return 1; }
	// then 4 single-token decodes (decode path, n_tokens = 1)
	uint64_t h = 1469598103934665603ULL;
	for (int i = 0; i < 6; i++) {
		const unsigned char *p = (const unsigned char *)llama_get_logits_ith(ctx, i);
		for (int k = 0; k < nv * 4; k++) { h ^= p[k]; h *= 1099511628211ULL; }
	}
	for (int s = 0; s < 4; s++) {
		struct llama_batch b1 = llama_batch_get_one(&toks[s], 1);
		llama_token t = toks[s];
		b1.token = &t;
		// positions continue automatically with llama_batch_get_one
		if (llama_decode(ctx, b1)) { printf("decode failed\n"); return 1; }
		const unsigned char *p = (const unsigned char *)llama_get_logits_ith(ctx, -1);
		for (int k = 0; k < nv * 4; k++) { h ^= p[k]; h *= 1099511628211ULL; }
	}
	printf("%-22s %s logits-hash=%016llx first=%.9g\n", argv[2], path, (unsigned long long)h, llama_get_logits_ith(ctx, -1)[0]);
	return 0;
}
