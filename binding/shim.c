#include "shim.h"
#include "_cgo_export.h"

void es_log_tramp(enum ggml_log_level level, const char *text, void *user_data) {
	(void)user_data;
	goLogTramp((int)level, (char *)text);
}

bool es_progress_tramp(float progress, void *user_data) {
	return goProgressTramp(progress, (uintptr_t)user_data);
}

bool es_abort_cb(void *data) {
	return __atomic_load_n((int *)data, __ATOMIC_ACQUIRE) != 0;
}

int *es_flag_new(void) { return (int *)calloc(1, sizeof(int)); }
void es_flag_store(int *flag, int value) { __atomic_store_n(flag, value, __ATOMIC_RELEASE); }
int es_flag_load(int *flag) { return __atomic_load_n(flag, __ATOMIC_ACQUIRE); }

ggml_abort_callback es_abort_fn(void) { return es_abort_cb; }
void es_abort_msg_tramp(const char *msg) { goAbortTramp((char *)msg); }
ggml_abort_callback_t es_abort_msg_fn(void) { return es_abort_msg_tramp; }
ggml_log_callback es_log_fn(void) { return es_log_tramp; }
llama_progress_callback es_progress_fn(void) { return es_progress_tramp; }

void es_set_progress(struct llama_model_params *p, uintptr_t handle) {
	p->progress_callback = es_progress_tramp;
	p->progress_callback_user_data = (void *)handle;
}
