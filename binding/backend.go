package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// defaultBackendDir is where ggml's CPU backend plugins are loaded from when EXPERTSNIPER_BACKEND_DIR
// is not set. build.sh sets it with -ldflags -X for builds whose compiled-in ggml default is wrong
// (the Debian build root: the plugins live under the root, not the host's /usr/lib).
var defaultBackendDir string

// BackendDirEnv names the environment variable that overrides defaultBackendDir.
const BackendDirEnv = "EXPERTSNIPER_BACKEND_DIR"

var (
	backendOnce sync.Once
	backendErr  error
)

// Init loads ggml's backends and initialises llama.cpp once per process. Every constructor calls it,
// so calling it yourself is only useful to report a broken installation early. It is safe for
// concurrent use; the first call's result is returned to every caller.
func Init() error {
	backendOnce.Do(func() { backendErr = initBackends() })
	return backendErr
}

func initBackends() error {
	// Route logs before anything can print: backend loading already logs.
	C.llama_log_set(C.es_log_fn(), nil)

	dir := os.Getenv(BackendDirEnv)
	if dir == "" {
		dir = defaultBackendDir
	}
	if dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("binding: ggml backend directory %q (from %s or the build) is not a readable directory: %v", dir, BackendDirEnv, err)
		}
		cdir := C.CString(dir)
		defer C.free(unsafe.Pointer(cdir))
		C.ggml_backend_load_all_from_path(cdir)
	} else {
		C.ggml_backend_load_all()
	}
	C.llama_backend_init()

	cpu := C.CString("CPU")
	defer C.free(unsafe.Pointer(cpu))
	if C.ggml_backend_reg_by_name(cpu) == nil {
		where := "ggml's default backend path"
		if dir != "" {
			where = fmt.Sprintf("%q", dir)
		}
		return fmt.Errorf("binding: no CPU backend was registered after loading ggml backends from %s: "+
			"set %s to the directory holding libggml-cpu-*.so (Debian: /usr/lib/<arch>/ggml/backends0)", where, BackendDirEnv)
	}
	return nil
}

// LogLevel is the severity of a llama.cpp log line.
type LogLevel int

// Levels as in ggml.h.
const (
	LogDebug LogLevel = 1
	LogInfo  LogLevel = 2
	LogWarn  LogLevel = 3
	LogError LogLevel = 4
)

func (l LogLevel) String() string {
	switch l {
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	case LogError:
		return "error"
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// Logger receives llama.cpp's log lines at or above its level. A nil Logger (the default) drops them:
// llama.cpp is chatty and our front ends own stderr.
type Logger func(level LogLevel, msg string)

type logSink struct {
	fn  Logger
	min LogLevel
}

var (
	logger  atomic.Pointer[logSink]
	logMu   sync.Mutex // serialises line assembly across llama.cpp's threads
	logLine strings.Builder
	logLvl  LogLevel
)

// SetLogger routes llama.cpp and ggml log lines of at least level min to fn (nil silences them). Lines
// are assembled from llama.cpp's fragments (GGML_LOG_LEVEL_CONT) and delivered without the trailing
// newline. fn may be called from llama.cpp's compute threads and must not call back into the binding.
func SetLogger(min LogLevel, fn Logger) {
	if fn == nil {
		logger.Store(nil)
		return
	}
	logger.Store(&logSink{fn: fn, min: min})
}

// captures collect error lines while a call that reports failure only as NULL runs, so that its
// error can say why. Log lines are process-wide: a concurrent load may add its lines too.
var (
	captureMu sync.Mutex
	captures  map[*[]string]struct{}
	capturing atomic.Int32
)

// captureErrors runs fn and returns the warning and error lines llama.cpp logged meanwhile.
func captureErrors(fn func()) string {
	lines := new([]string)
	captureMu.Lock()
	if captures == nil {
		captures = map[*[]string]struct{}{}
	}
	captures[lines] = struct{}{}
	capturing.Add(1)
	captureMu.Unlock()
	defer func() {
		captureMu.Lock()
		delete(captures, lines)
		capturing.Add(-1)
		captureMu.Unlock()
	}()
	fn()
	captureMu.Lock()
	defer captureMu.Unlock()
	const keep = 4
	l := *lines
	if len(l) > keep {
		l = l[len(l)-keep:]
	}
	return strings.Join(l, "; ")
}

func captureLine(level C.int, text string) {
	if capturing.Load() == 0 || (level != C.GGML_LOG_LEVEL_ERROR && level != C.GGML_LOG_LEVEL_WARN) {
		return
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return
	}
	captureMu.Lock()
	for l := range captures {
		*l = append(*l, text)
	}
	captureMu.Unlock()
}

//export goLogTramp
func goLogTramp(level C.int, text *C.char) {
	sink := logger.Load()
	if sink == nil && capturing.Load() == 0 {
		return
	}
	msg := C.GoString(text)
	captureLine(level, msg)
	if sink == nil {
		return
	}
	lvl := LogLevel(level)
	logMu.Lock()
	if lvl != 5 { // not a continuation: this fragment starts a new line
		logLvl = lvl
	}
	logLine.WriteString(msg)
	var lines []string
	cur := logLine.String()
	for {
		i := strings.IndexByte(cur, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, cur[:i])
		cur = cur[i+1:]
	}
	logLine.Reset()
	logLine.WriteString(cur)
	emitLvl := logLvl
	logMu.Unlock()
	if emitLvl < sink.min {
		return
	}
	for _, l := range lines {
		sink.fn(emitLvl, l)
	}
}

// SystemInfo is llama.cpp's description of the CPU features and backends in use.
func SystemInfo() (string, error) {
	if err := Init(); err != nil {
		return "", err
	}
	return C.GoString(C.llama_print_system_info()), nil
}
