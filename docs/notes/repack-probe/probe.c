// probe.c — does ggml's CPU "extra" buffer type (CPU_REPACK/AMX) allow per-expert conversion?
// Only forwards to ggml's public API (ggml.h, ggml-backend.h, ggml-alloc.h). Questions 1-4 of the brief.
//   probe list                 Q1: extra bufts, supports_op for MUL_MAT_ID (3-D) and MUL_MAT (2-D)
//   probe layout               Q2: per-expert staging repack == slice e of the whole 3-D repack?
//   probe partial              Q2: ggml_backend_tensor_set with offset!=0 on a repack tensor (aborts)
//   probe compute              Q3: MUL_MAT_ID on a repack-buffer tensor whose ->data is our memory
//   probe cost                 Q4: time per expert of the staging conversion
#include <ggml.h>
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

static ggml_backend_dev_t cpu_dev;
static ggml_backend_buffer_type_t extra[8];
static int n_extra;

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

static void setup(void) {
	const char *dir = getenv("GGML_BACKEND_DIR");
	ggml_backend_load_all_from_path(dir ? dir : "/usr/lib/x86_64-linux-gnu/ggml/backends0");
	cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
	ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu_dev);
	ggml_backend_dev_get_extra_bufts_t f =
		(ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
	if (!f) { printf("no ggml_backend_dev_get_extra_bufts\n"); exit(1); }
	for (ggml_backend_buffer_type_t *p = f(cpu_dev); p && *p && n_extra < 8; p++) extra[n_extra++] = *p;
}

static ggml_backend_buffer_type_t repack_buft(void) {
	for (int i = 0; i < n_extra; i++) if (strcmp(ggml_backend_buft_name(extra[i]), "CPU_REPACK") == 0) return extra[i];
	printf("no CPU_REPACK buft\n"); exit(1);
}

// llama.cpp's weight_buft_supported, for MUL_MAT_ID (3-D) or MUL_MAT (2-D).
static int supports(ggml_backend_buffer_type_t buft, enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2, int id) {
	if (ne0 % ggml_blck_size(type)) return -1;
	struct ggml_init_params ip = { .mem_size = 8 * ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
	struct ggml_context *ctx = ggml_init(ip);
	struct ggml_tensor *w = id ? ggml_new_tensor_3d(ctx, type, ne0, ne1, ne2) : ggml_new_tensor_2d(ctx, type, ne0, ne1);
	struct ggml_tensor *op;
	if (id) {
		struct ggml_tensor *b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, 8, 512);
		struct ggml_tensor *ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, 8, 512);
		op = ggml_mul_mat_id(ctx, w, b, ids);
	} else {
		struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, 512);
		op = ggml_mul_mat(ctx, w, b);
	}
	ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, 0);
	w->buffer = buf;
	int ok = ggml_backend_dev_supports_op(cpu_dev, op);
	size_t asz = ggml_backend_buft_get_alloc_size(buft, w);
	printf("    %-10s %-5s %s ne=[%lld,%lld,%lld] supports_op=%d alloc_size=%zu nbytes=%zu\n", ggml_backend_buft_name(buft),
		ggml_type_name(type), id ? "MUL_MAT_ID" : "MUL_MAT   ", (long long)ne0, (long long)ne1, (long long)(id ? ne2 : 1), ok, asz,
		ggml_nbytes(w));
	ggml_backend_buffer_free(buf);
	ggml_free(ctx);
	return ok;
}

static void cmd_list(void) {
	printf("CPU device: %s (%s)\n", ggml_backend_dev_name(cpu_dev), ggml_backend_dev_description(cpu_dev));
	printf("extra bufts (%d):", n_extra);
	for (int i = 0; i < n_extra; i++) printf(" %s", ggml_backend_buft_name(extra[i]));
	printf("\n");
	ggml_backend_buffer_type_t all[10]; int n = 0;
	for (int i = 0; i < n_extra; i++) all[n++] = extra[i];
	all[n++] = ggml_backend_dev_buffer_type(cpu_dev);
	enum ggml_type types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q8_0, GGML_TYPE_F16, GGML_TYPE_IQ4_NL, GGML_TYPE_Q6_K };
	for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
		printf("%s:\n", ggml_type_name(types[t]));
		for (int i = 0; i < n; i++) {
			supports(all[i], types[t], 2048, 512, 256, 1); // gate/up exps
			supports(all[i], types[t], 512, 2048, 256, 1); // down exps
			supports(all[i], types[t], 2048, 512, 1, 0);   // 2-D per-expert
			supports(all[i], types[t], 64, 128, 8, 1);     // tiny model's shape
		}
	}
}

// Valid quantized bytes for ne0 x ne1 x ne2 (random Gaussian-ish floats through ggml_quantize_chunk).
static void *make_raw(enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2, unsigned seed, size_t *size) {
	int64_t n = ne0 * ne1 * ne2;
	float *f = malloc(n * sizeof(float));
	srand(seed);
	for (int64_t i = 0; i < n; i++) f[i] = ((rand() / (float)RAND_MAX) - 0.5f) + ((rand() / (float)RAND_MAX) - 0.5f);
	size_t rs = ggml_row_size(type, ne0);
	*size = rs * ne1 * ne2;
	void *q = malloc(*size);
	ggml_quantize_chunk(type, f, q, 0, ne1 * ne2, ne0, NULL);
	free(f);
	return q;
}

struct alloc_t { struct ggml_context *ctx; struct ggml_tensor *t; ggml_backend_buffer_t buf; };

static struct alloc_t alloc_in(ggml_backend_buffer_type_t buft, enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2) {
	struct alloc_t a;
	struct ggml_init_params ip = { .mem_size = 2 * ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
	a.ctx = ggml_init(ip);
	a.t = ggml_new_tensor_3d(a.ctx, type, ne0, ne1, ne2);
	a.buf = ggml_backend_alloc_ctx_tensors_from_buft(a.ctx, buft); // runs the buffer's init_tensor (sets ->extra)
	return a;
}
static void free_a(struct alloc_t *a) { ggml_backend_buffer_free(a->buf); ggml_free(a->ctx); }

static void cmd_layout(void) {
	ggml_backend_buffer_type_t rb = repack_buft();
	enum ggml_type types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL, GGML_TYPE_Q8_0 };
	int64_t shapes[][3] = { { 2048, 512, 16 }, { 512, 2048, 16 }, { 64, 128, 8 } };
	for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
		for (size_t si = 0; si < 3; si++) {
			enum ggml_type type = types[ti];
			int64_t ne0 = shapes[si][0], ne1 = shapes[si][1], E = shapes[si][2];
			if (ne0 % ggml_blck_size(type)) continue;
			size_t size;
			unsigned char *raw = make_raw(type, ne0, ne1, E, 7 + ti, &size);
			struct alloc_t whole = alloc_in(rb, type, ne0, ne1, E);
			struct alloc_t stage = alloc_in(rb, type, ne0, ne1, 1);
			ggml_backend_tensor_set(whole.t, raw, 0, size);
			size_t per = whole.t->nb[2];
			int same = 0, differs_from_raw = 0;
			for (int64_t e = 0; e < E; e++) {
				ggml_backend_tensor_set(stage.t, raw + e * per, 0, per);
				if (memcmp(stage.t->data, (char *)whole.t->data + e * per, per) == 0) same++;
				if (memcmp(stage.t->data, raw + e * per, per) != 0) differs_from_raw++;
			}
			printf("%-6s ne=[%lld,%lld,%lld] per-expert=%zu B  extra(whole)=%p extra(stage)=%p  experts identical to slice of whole: %d/%lld  repacked!=raw: %d/%lld\n",
				ggml_type_name(type), (long long)ne0, (long long)ne1, (long long)E, per, whole.t->extra, stage.t->extra,
				same, (long long)E, differs_from_raw, (long long)E);
			free_a(&whole); free_a(&stage); free(raw);
		}
}

static void cmd_partial(const char *what) {
	ggml_backend_buffer_type_t rb = repack_buft();
	size_t size;
	unsigned char *raw = make_raw(GGML_TYPE_Q4_0, 2048, 512, 4, 1, &size);
	struct alloc_t whole = alloc_in(rb, GGML_TYPE_Q4_0, 2048, 512, 4);
	size_t per = whole.t->nb[2];
	fflush(stdout);
	if (strcmp(what, "offset") == 0) {
		printf("tensor_set(whole 3-D, expert 1 bytes, offset=%zu, size=%zu) ...\n", per, per); fflush(stdout);
		ggml_backend_tensor_set(whole.t, raw + per, per, per);
	} else {
		printf("tensor_set(whole 3-D, expert 0 bytes, offset=0, size=%zu of %zu) ...\n", per, size); fflush(stdout);
		ggml_backend_tensor_set(whole.t, raw, 0, per);
	}
	printf("returned without abort\n");
}

// MUL_MAT_ID: out = W[ids] * b.  W: [ne0, ne1, E], b: [ne0, n_used, n_tok], ids: [n_used, n_tok]
static ggml_backend_t backend;
static float *run_mmid(struct ggml_tensor *W, const float *bin, const int32_t *idin, int n_used, int n_tok, size_t *nout) {
	struct ggml_init_params ip = { .mem_size = 16 * ggml_tensor_overhead() + ggml_graph_overhead(), .mem_buffer = NULL, .no_alloc = true };
	struct ggml_context *ctx = ggml_init(ip);
	struct ggml_tensor *b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, W->ne[0], n_used, n_tok);
	struct ggml_tensor *ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_used, n_tok);
	ggml_set_input(b); ggml_set_input(ids);
	struct ggml_tensor *out = ggml_mul_mat_id(ctx, W, b, ids);
	ggml_set_output(out);
	struct ggml_cgraph *gf = ggml_new_graph(ctx);
	ggml_build_forward_expand(gf, out);
	ggml_gallocr_t ga = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
	if (!ggml_gallocr_alloc_graph(ga, gf)) { printf("gallocr failed\n"); exit(1); }
	ggml_backend_tensor_set(b, bin, 0, ggml_nbytes(b));
	ggml_backend_tensor_set(ids, idin, 0, ggml_nbytes(ids));
	if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) { printf("compute failed\n"); exit(1); }
	*nout = ggml_nelements(out);
	float *r = malloc(ggml_nbytes(out));
	ggml_backend_tensor_get(out, r, 0, ggml_nbytes(out));
	ggml_gallocr_free(ga);
	ggml_free(ctx);
	return r;
}

static void cmd_compute(void) {
	ggml_backend_buffer_type_t rb = repack_buft();
	backend = ggml_backend_dev_init(cpu_dev, NULL);
	ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu_dev);
	void (*set_threads)(ggml_backend_t, int) = (void (*)(ggml_backend_t, int))ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
	if (set_threads) set_threads(backend, 2);
	enum ggml_type types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL };
	int64_t shapes[][3] = { { 2048, 512, 16 }, { 512, 2048, 16 }, { 256, 128, 8 } };
	const int n_used = 4;
	for (size_t ti = 0; ti < 3; ti++)
		for (size_t si = 0; si < 3; si++)
			for (int n_tok = 1; n_tok <= 16; n_tok += 15) {
				enum ggml_type type = types[ti];
				int64_t ne0 = shapes[si][0], ne1 = shapes[si][1], E = shapes[si][2];
				size_t size;
				unsigned char *raw = make_raw(type, ne0, ne1, E, 100 + ti, &size);
				float *bin = malloc(sizeof(float) * ne0 * n_used * n_tok);
				for (int64_t i = 0; i < ne0 * n_used * n_tok; i++) bin[i] = (rand() / (float)RAND_MAX) - 0.5f;
				int32_t *ids = malloc(sizeof(int32_t) * n_used * n_tok);
				for (int t = 0; t < n_tok; t++)
					for (int k = 0; k < n_used; k++) ids[t * n_used + k] = (t * 3 + k * 5 + 1) % E; // distinct per token
				// A: whole 3-D tensor set normally into a repack buffer (what llama.cpp's default load does)
				struct alloc_t whole = alloc_in(rb, type, ne0, ne1, E);
				ggml_backend_tensor_set(whole.t, raw, 0, size);
				size_t n; float *ra = run_mmid(whole.t, bin, ids, n_used, n_tok, &n);
				// P: plain CPU buffer (use_extra_bufts=false path)
				struct alloc_t plain = alloc_in(ggml_backend_dev_buffer_type(cpu_dev), type, ne0, ne1, E);
				ggml_backend_tensor_set(plain.t, raw, 0, size);
				float *rp = run_mmid(plain.t, bin, ids, n_used, n_tok, &n);
				// B: "slots": our own memory, experts at permuted slot positions (slot s holds expert perm[s]),
				// each converted through a [ne0,ne1,1] staging tensor in the repack buft; ids rewritten to slots.
				// The tensor is a copy of the whole tensor's header with ->data = our memory, ->extra = staging's.
				struct alloc_t stage = alloc_in(rb, type, ne0, ne1, 1);
				size_t per = whole.t->nb[2];
				int64_t S = E + 3; // more slots than experts, like the sniper's shared slots
				unsigned char *own = aligned_alloc(4096, (S * per + 4095) / 4096 * 4096);
				memset(own, 0xEE, S * per);
				int64_t *slot_of = malloc(sizeof(int64_t) * E);
				for (int64_t e = 0; e < E; e++) {
					int64_t s = (e * 7 + 2) % S; // a permutation of E into S (7 coprime to S for these sizes)
					slot_of[e] = s;
					ggml_backend_tensor_set(stage.t, raw + e * per, 0, per);
					memcpy(own + s * per, stage.t->data, per);
				}
				int32_t *ids2 = malloc(sizeof(int32_t) * n_used * n_tok);
				for (int i = 0; i < n_used * n_tok; i++) ids2[i] = (int32_t)slot_of[ids[i]];
				struct ggml_init_params ip = { .mem_size = ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
				struct ggml_context *octx = ggml_init(ip);
				struct ggml_tensor *W = ggml_new_tensor_3d(octx, type, ne0, ne1, S);
				W->buffer = stage.buf;       // a repack buffer: the CPU backend dispatches on buffer->buft
				W->extra = stage.t->extra;   // the repack traits (compute_forward / work_size)
				W->data = own;
				float *rb2 = run_mmid(W, bin, ids2, n_used, n_tok, &n);
				// C: same but W->extra left NULL (what happens if the traits are not set?)
				int eqA = memcmp(ra, rb2, n * sizeof(float)) == 0;
				int eqP = memcmp(ra, rp, n * sizeof(float)) == 0;
				double maxd = 0;
				for (size_t i = 0; i < n; i++) { double d = ra[i] - rp[i]; if (d < 0) d = -d; if (d > maxd) maxd = d; }
				printf("%-6s ne=[%lld,%lld,%lld] n_tok=%-2d extra=%p: own-memory slots == whole repack: %s   whole repack == plain CPU: %s (max |diff| %.3g)\n",
					ggml_type_name(type), (long long)ne0, (long long)ne1, (long long)E, n_tok, W->extra, eqA ? "BIT-EXACT" : "DIFFERENT",
					eqP ? "identical" : "different", maxd);
				ggml_free(octx); free(ids2); free(slot_of); free(own);
				free_a(&stage); free_a(&plain); free_a(&whole);
				free(ra); free(rp); free(rb2); free(bin); free(ids); free(raw);
			}
}

static void cmd_noextra(void) {
	// What if ->extra is NULL on a repack-buffer tensor? (expect a crash or wrong path)
	ggml_backend_buffer_type_t rb = repack_buft();
	backend = ggml_backend_dev_init(cpu_dev, NULL);
	size_t size;
	unsigned char *raw = make_raw(GGML_TYPE_Q4_0, 256, 128, 8, 1, &size);
	struct alloc_t whole = alloc_in(rb, GGML_TYPE_Q4_0, 256, 128, 8);
	ggml_backend_tensor_set(whole.t, raw, 0, size);
	float bin[256 * 2]; for (int i = 0; i < 512; i++) bin[i] = i * 0.001f;
	int32_t ids[2] = { 1, 5 };
	size_t n; float *ra = run_mmid(whole.t, bin, ids, 2, 1, &n);
	whole.t->extra = NULL;
	printf("computing with ->extra = NULL ...\n"); fflush(stdout);
	float *rb2 = run_mmid(whole.t, bin, ids, 2, 1, &n);
	printf("returned; equal to with traits: %d\n", memcmp(ra, rb2, n * 4) == 0);
}

static void cmd_cost(void) {
	ggml_backend_buffer_type_t rb = repack_buft();
	enum ggml_type types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL };
	for (size_t ti = 0; ti < 3; ti++) {
		enum ggml_type type = types[ti];
		// Qwen3.5-35B-A3B expert: gate [2048,512], up [2048,512], down [512,2048]
		int64_t shp[3][2] = { { 2048, 512 }, { 2048, 512 }, { 512, 2048 } };
		struct alloc_t st[3]; unsigned char *raw[3]; size_t sz[3]; unsigned char *slot[3];
		size_t total = 0;
		for (int p = 0; p < 3; p++) {
			st[p] = alloc_in(rb, type, shp[p][0], shp[p][1], 1);
			raw[p] = make_raw(type, shp[p][0], shp[p][1], 1, p + 1, &sz[p]);
			slot[p] = aligned_alloc(4096, (sz[p] + 4095) / 4096 * 4096);
			memset(slot[p], 0, sz[p]);
			total += sz[p];
		}
		const int iters = 200;
		// warm
		for (int p = 0; p < 3; p++) { ggml_backend_tensor_set(st[p].t, raw[p], 0, sz[p]); memcpy(slot[p], st[p].t->data, sz[p]); }
		double t0 = now();
		for (int i = 0; i < iters; i++)
			for (int p = 0; p < 3; p++) ggml_backend_tensor_set(st[p].t, raw[p], 0, sz[p]);
		double t1 = now();
		for (int i = 0; i < iters; i++)
			for (int p = 0; p < 3; p++) { ggml_backend_tensor_set(st[p].t, raw[p], 0, sz[p]); memcpy(slot[p], st[p].t->data, sz[p]); }
		double t2 = now();
		for (int i = 0; i < iters; i++)
			for (int p = 0; p < 3; p++) memcpy(slot[p], raw[p], sz[p]);
		double t3 = now();
		// zero-copy: point the staging tensor's ->data at the slot and let tensor_set repack straight into it
		unsigned char *slot2[3]; void *saved[3]; int same = 1;
		for (int p = 0; p < 3; p++) {
			slot2[p] = aligned_alloc(4096, (sz[p] + 4095) / 4096 * 4096);
			saved[p] = st[p].t->data;
			st[p].t->data = slot2[p];
			ggml_backend_tensor_set(st[p].t, raw[p], 0, sz[p]);
			same &= memcmp(slot2[p], saved[p], sz[p]) == 0; // saved = staging buffer, holds the repack of raw[p]
		}
		double t4 = now();
		for (int i = 0; i < iters; i++)
			for (int p = 0; p < 3; p++) ggml_backend_tensor_set(st[p].t, raw[p], 0, sz[p]);
		double t5 = now();
		for (int p = 0; p < 3; p++) { st[p].t->data = saved[p]; free(slot2[p]); }
		printf("%-6s   zero-copy (staging->data = slot, tensor_set repacks into the slot): %.3f ms per expert, bytes identical to the staging buffer's repack: %s\n",
			ggml_type_name(type), (t5 - t4) / iters * 1e3, same ? "yes" : "NO");
		printf("%-6s expert (gate+up+down) %zu B: tensor_set into staging %.3f ms, + memcpy to slot %.3f ms, memcpy alone %.3f ms  (%.2f GB/s conversion)\n",
			ggml_type_name(type), total, (t1 - t0) / iters * 1e3, (t2 - t1) / iters * 1e3, (t3 - t2) / iters * 1e3,
			total / ((t1 - t0) / iters) / 1e9);
		for (int p = 0; p < 3; p++) { free_a(&st[p]); free(raw[p]); free(slot[p]); }
	}
}

// (a) a zero-size CPU_REPACK "carrier" buffer + a bare tensor header whose ->data is our memory:
//     ggml_backend_buffer_init_tensor sets ->extra, ggml_backend_tensor_set repacks straight into our memory.
// (b) row locality: repack of a fused [ne0, 2*ff, 1] (gate rows then up rows) == repack(gate) || repack(up).
static void cmd_carrier(void) {
	ggml_backend_buffer_type_t rb = repack_buft();
	size_t csz = getenv("CARRIER_SIZE") ? (size_t)atol(getenv("CARRIER_SIZE")) : 4096;
	ggml_backend_buffer_t carrier = ggml_backend_buft_alloc_buffer(rb, csz);
	printf("carrier buffer: %p size=%zu base=%p\n", (void *)carrier, ggml_backend_buffer_get_size(carrier), ggml_backend_buffer_get_base(carrier));
	enum ggml_type types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL };
	for (int ti = 0; ti < 3; ti++) {
		enum ggml_type type = types[ti];
		int64_t ne0 = 2048, ff = 512;
		size_t sg, su;
		unsigned char *g = make_raw(type, ne0, ff, 1, 11, &sg), *u = make_raw(type, ne0, ff, 1, 12, &su);
		unsigned char *fused = malloc(sg + su); memcpy(fused, g, sg); memcpy(fused + sg, u, su);
		// reference: normal staging tensors in real repack buffers
		struct alloc_t sgate = alloc_in(rb, type, ne0, ff, 1), sfused = alloc_in(rb, type, ne0, 2 * ff, 1);
		ggml_backend_tensor_set(sgate.t, g, 0, sg);
		ggml_backend_tensor_set(sfused.t, fused, 0, sg + su);
		unsigned char *refgate = malloc(sg); memcpy(refgate, sgate.t->data, sg);
		ggml_backend_tensor_set(sgate.t, u, 0, su);
		int rowlocal = memcmp(sfused.t->data, refgate, sg) == 0 && memcmp((char *)sfused.t->data + sg, sgate.t->data, su) == 0;
		// carrier: bare header
		struct ggml_init_params ip = { .mem_size = ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
		struct ggml_context *ctx = ggml_init(ip);
		struct ggml_tensor *h = ggml_new_tensor_3d(ctx, type, ne0, 2 * ff, 1);
		unsigned char *mine = aligned_alloc(4096, ((sg + su) + 4095) / 4096 * 4096);
		h->buffer = carrier;
		h->data = mine;
		printf("  init_tensor ...\n");
		enum ggml_status st = ggml_backend_buffer_init_tensor(carrier, h);
		printf("  tensor_set ...\n");
		ggml_backend_tensor_set(h, fused, 0, sg + su);
		int same = memcmp(mine, sfused.t->data, sg + su) == 0;
		printf("%-6s init_tensor status=%d extra=%p (staging's %p); carrier+header repack into own memory == staging repack: %s; fused repack == repack(gate)||repack(up): %s\n",
			ggml_type_name(type), (int)st, h->extra, sfused.t->extra, same ? "yes" : "NO", rowlocal ? "yes" : "NO");
		ggml_free(ctx); free(mine); free(refgate); free(fused); free(g); free(u);
		free_a(&sgate); free_a(&sfused);
	}
	ggml_backend_buffer_free(carrier);
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	setup();
	const char *c = argc > 1 ? argv[1] : "list";
	if (!strcmp(c, "list")) cmd_list();
	else if (!strcmp(c, "layout")) cmd_layout();
	else if (!strcmp(c, "partial")) cmd_partial(argc > 2 ? argv[2] : "offset");
	else if (!strcmp(c, "compute")) cmd_compute();
	else if (!strcmp(c, "noextra")) cmd_noextra();
	else if (!strcmp(c, "cost")) cmd_cost();
	else if (!strcmp(c, "carrier")) cmd_carrier();
	return 0;
}
