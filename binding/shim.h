// shim.h: the only C in the binding besides llama.h itself. It holds trampolines that forward
// llama.cpp's callbacks into exported Go functions, and the abort flag that compute threads read
// without calling Go. All logic lives in Go.
#ifndef EXPERTSNIPER_SHIM_H
#define EXPERTSNIPER_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <llama.h>

// es_log_tramp forwards llama.cpp/ggml log lines to Go (goLogTramp).
void es_log_tramp(enum ggml_log_level level, const char *text, void *user_data);

// es_progress_tramp forwards model load progress to Go; user_data carries a cgo.Handle.
bool es_progress_tramp(float progress, void *user_data);

// es_abort_cb is llama.cpp's abort_callback: it reads the int flag at data atomically. It runs on
// ggml's compute threads, so it never calls into Go.
bool es_abort_cb(void *data);

// es_flag_new allocates a zeroed flag on the C heap (C keeps a pointer to it); free with free().
int *es_flag_new(void);
void es_flag_store(int *flag, int value);
int es_flag_load(int *flag);

// es_set_progress points p's progress callback at es_progress_tramp with a cgo.Handle (an integer,
// converted here so that Go never turns an integer into a pointer).
void es_set_progress(struct llama_model_params *p, uintptr_t handle);

// es_abort_fn returns es_abort_cb as a value Go can store in llama_context_params.
ggml_abort_callback es_abort_fn(void);

// es_abort_msg_tramp forwards ggml's fatal-error message to Go (goAbortTramp) just before ggml ends
// the process; es_abort_msg_fn returns it for ggml_set_abort_callback.
void es_abort_msg_tramp(const char *msg);
ggml_abort_callback_t es_abort_msg_fn(void);
ggml_log_callback es_log_fn(void);
llama_progress_callback es_progress_fn(void);

#endif
