// bigalloc.c: see bigalloc.h for why this interposition exists and what it covers.
#define _GNU_SOURCE
#include "bigalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__linux__) && defined(__GLIBC__)
// Allocations of at least this size made while armed are mapped, not malloc'd.
#define ES_BIG_ALLOC (64u << 20)
#define ES_MAX_BIG 64

static pthread_mutex_t big_mu = PTHREAD_MUTEX_INITIALIZER;
static int big_armed; // armed loads in progress (a count: loads may overlap)
static size_t big_live; // mappings handed out and not yet freed
static size_t big_total; // mappings ever handed out
static struct { void *p; size_t n; } big[ES_MAX_BIG];

void es_big_alloc_arm(int on) {
	if (on) __atomic_add_fetch(&big_armed, 1, __ATOMIC_ACQ_REL);
	else __atomic_sub_fetch(&big_armed, 1, __ATOMIC_ACQ_REL);
}

size_t es_big_alloc_count(void) { return __atomic_load_n(&big_total, __ATOMIC_ACQUIRE); }

// glibc's own entry points, so that the interposed functions below never recurse or need dlsym.
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

// posix_memalign is interposed for the whole process; outside an armed load it is glibc's.
int posix_memalign(void **out, size_t align, size_t size) {
	if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
	if (size >= ES_BIG_ALLOC && align <= 4096 && __atomic_load_n(&big_armed, __ATOMIC_ACQUIRE) > 0) {
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) return ENOMEM;
		// Transparent huge pages where the system gives them on request: the pinned weights are
		// read every token, and on these VMs a TLB miss on 4 KiB pages is dear (measured: prefill
		// 15% faster with them, with a 2 GiB cache). Only advice.
		madvise(p, size, MADV_HUGEPAGE);
		pthread_mutex_lock(&big_mu);
		for (int i = 0; i < ES_MAX_BIG; i++) {
			if (big[i].p == NULL) {
				big[i].p = p;
				big[i].n = size;
				__atomic_add_fetch(&big_live, 1, __ATOMIC_RELEASE);
				__atomic_add_fetch(&big_total, 1, __ATOMIC_RELEASE);
				pthread_mutex_unlock(&big_mu);
				*out = p;
				return 0;
			}
		}
		pthread_mutex_unlock(&big_mu);
		munmap(p, size); // table full: use the ordinary allocator
	}
	void *p = __libc_memalign(align, size);
	if (p == NULL) return ENOMEM;
	*out = p;
	return 0;
}

// free is interposed to unmap what posix_memalign mapped; everything else goes to glibc.
void free(void *p) {
	if (p != NULL && __atomic_load_n(&big_live, __ATOMIC_ACQUIRE) > 0) {
		pthread_mutex_lock(&big_mu);
		for (int i = 0; i < ES_MAX_BIG; i++) {
			if (big[i].p == p) {
				size_t n = big[i].n;
				big[i].p = NULL;
				__atomic_sub_fetch(&big_live, 1, __ATOMIC_RELEASE);
				pthread_mutex_unlock(&big_mu);
				munmap(p, n);
				return;
			}
		}
		pthread_mutex_unlock(&big_mu);
	}
	__libc_free(p);
}
void es_big_alloc_untouched(void *p, size_t n) {
	// Whole pages inside the range only: its ends share pages with tensors that are used.
	uintptr_t page = 4096, lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + n) & ~(page - 1);
	if (hi > lo) madvise((void *)lo, hi - lo, MADV_NOHUGEPAGE);
}
#else
void es_big_alloc_untouched(void *p, size_t n) { (void)p; (void)n; }
// macOS backs memory lazily: llama.cpp's one big allocation costs nothing until touched.
void es_big_alloc_arm(int on) { (void)on; }
size_t es_big_alloc_count(void) { return 0; }
#endif
