// bigalloc.h: unreserved memory for llama.cpp's one allocation of a streamed model's weights.
//
// Why this exists (docs/design.md, "Models larger than RAM+swap"): llama_model_init_from_user puts all
// of a model's weights, the streamed experts included, in one posix_memalign allocation. Under Linux's
// default overcommit heuristic an allocation larger than RAM + swap fails ("ggml_aligned_malloc:
// insufficient memory") although the expert part of it is never touched: every expert tensor's data
// is pointed at the sniper's own memory as the model loads. llama.cpp b11669 offers no hook for that
// allocation — a custom buffer type needs ggml's internal ggml-backend-impl.h, which is not installed
// — so posix_memalign and free are interposed: while at least one streamed load is armed, aligned
// allocations of 64 MiB or more get MAP_NORESERVE anonymous mappings (untouched pages cost nothing);
// everything else, and every allocation outside an armed load, goes to glibc unchanged. Arming is a
// count, so concurrent loads in one process do not disarm each other (stream_overcommit_test.go runs
// two at once). macOS backs memory lazily and needs none of this.
#ifndef EXPERTSNIPER_BIGALLOC_H
#define EXPERTSNIPER_BIGALLOC_H

#include <stddef.h>

// es_big_alloc_arm(1) starts an armed load, es_big_alloc_arm(0) ends one.
void es_big_alloc_arm(int on);
// es_big_alloc_count is how many mappings were ever handed out (tests).
size_t es_big_alloc_count(void);
// es_big_alloc_untouched marks a range of such a mapping that is never touched (a streamed tensor's
// place: its data points at the sniper's memory): no transparent huge pages there, so that faulting
// the pinned weights next to it cannot pull 2 MiB pages of it into memory (measured: +93 MiB of RSS
// on a 48-layer model).
void es_big_alloc_untouched(void *p, size_t n);

#endif
