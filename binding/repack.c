#include "repack.h"

#include <string.h>

#define ES_MAX_EXTRA 8

static int n_extra = -1;                                   // -1: not initialised
static ggml_backend_buffer_t carriers[ES_MAX_EXTRA];       // one per extra buffer type
static ggml_backend_dev_t cpu_dev;

int es_repack_init(void) {
	// Called once, from Go under a sync.Once.
	if (n_extra >= 0) return n_extra;
	n_extra = 0;
	cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
	if (cpu_dev == NULL) return 0;
	ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu_dev);
	ggml_backend_dev_get_extra_bufts_t get =
		(ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
	if (get == NULL) return 0;
	for (ggml_backend_buffer_type_t *b = get(cpu_dev); b != NULL && *b != NULL && n_extra < ES_MAX_EXTRA; b++) {
		// 4 KiB, not 0: a size-0 buffer has no base and tensor_set through it segfaults.
		ggml_backend_buffer_t c = ggml_backend_buft_alloc_buffer(*b, 4096);
		if (c == NULL || ggml_backend_buffer_get_size(c) == 0) continue;
		ggml_backend_buffer_set_usage(c, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
		carriers[n_extra++] = c;
	}
	return n_extra;
}

// supports reports whether the CPU device runs w's op with w in carrier's buffer type, as llama.cpp's
// weight_buft_supported asks it (same shapes of the other operands).
static int supports(ggml_backend_buffer_t carrier, int type, int64_t ne0, int64_t ne1, int64_t ne2, int id) {
	struct ggml_init_params ip = { .mem_size = 8 * ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
	struct ggml_context *ctx = ggml_init(ip);
	if (ctx == NULL) return 0;
	struct ggml_tensor *w, *op;
	if (id) {
		w = ggml_new_tensor_3d(ctx, (enum ggml_type)type, ne0, ne1, ne2);
		struct ggml_tensor *b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, 8, 512);
		struct ggml_tensor *ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, 8, 512);
		op = ggml_mul_mat_id(ctx, w, b, ids);
	} else {
		w = ggml_new_tensor_2d(ctx, (enum ggml_type)type, ne0, ne1);
		struct ggml_tensor *b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, 512);
		op = ggml_mul_mat(ctx, w, b);
	}
	w->buffer = carrier;
	int ok = ggml_backend_dev_supports_op(cpu_dev, op);
	ggml_free(ctx);
	return ok;
}

int es_repack_choose(int type, int64_t ne0, int64_t ne1, int64_t ne2, int id,
	ggml_backend_buffer_t *carrier, void **traits) {
	if (n_extra <= 0 || type < 0 || type >= GGML_TYPE_COUNT || ne0 <= 0 || ne1 <= 0 || ne0 % ggml_blck_size((enum ggml_type)type) != 0) return -1;
	for (int i = 0; i < n_extra; i++) {
		if (!supports(carriers[i], type, ne0, ne1, ne2, id)) continue;
		struct ggml_tensor h;
		memset(&h, 0, sizeof h);
		h.type = (enum ggml_type)type;
		h.ne[0] = ne0; h.ne[1] = ne1; h.ne[2] = 1; h.ne[3] = 1;
		h.nb[0] = ggml_type_size(h.type);
		h.nb[1] = ggml_row_size(h.type, ne0);
		h.nb[2] = h.nb[1] * ne1; h.nb[3] = h.nb[2];
		h.buffer = carriers[i];
		h.data = ggml_backend_buffer_get_base(carriers[i]);
		if (ggml_backend_buffer_init_tensor(carriers[i], &h) != GGML_STATUS_SUCCESS || h.extra == NULL) continue;
		*carrier = carriers[i];
		*traits = h.extra;
		return 0;
	}
	return -1;
}

const char *es_repack_name(ggml_backend_buffer_t carrier) {
	return ggml_backend_buft_name(ggml_backend_buffer_get_type(carrier));
}

int es_repack_into(ggml_backend_buffer_t carrier, void *traits, int type, int64_t ne0,
	void *dst, const void *src, size_t nbytes) {
	if (carrier == NULL || traits == NULL || dst == NULL || src == NULL) return -1;
	size_t row = ggml_row_size((enum ggml_type)type, ne0);
	if (row == 0 || nbytes == 0 || nbytes % row != 0) return -1;
	struct ggml_tensor h;
	memset(&h, 0, sizeof h);
	h.type = (enum ggml_type)type;
	h.ne[0] = ne0; h.ne[1] = (int64_t)(nbytes / row); h.ne[2] = 1; h.ne[3] = 1;
	h.nb[0] = ggml_type_size(h.type);
	h.nb[1] = row;
	h.nb[2] = nbytes; h.nb[3] = nbytes;
	h.buffer = carrier;
	h.extra = traits;
	h.data = dst;
	ggml_backend_tensor_set(&h, src, 0, nbytes);
	return 0;
}
