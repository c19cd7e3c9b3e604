package binding

/*
#include <stdlib.h>
#include <llama.h>
#include <ggml-backend.h>

// ggml's RPC backend is a plugin (libggml-rpc.so) reached through the backend registry, so its entry
// points are function pointers; these forward calls through them (cgo cannot call a pointer itself).
typedef ggml_backend_reg_t (*es_rpc_add_server_fn)(const char *endpoint);
typedef void (*es_rpc_start_server_fn)(const char *endpoint, const char *cache_dir, size_t n_threads,
	size_t n_devices, ggml_backend_dev_t *devices);

static ggml_backend_reg_t es_rpc_add_server(void *fn, const char *endpoint) {
	return ((es_rpc_add_server_fn)fn)(endpoint);
}
static void es_rpc_start_server(void *fn, const char *endpoint, const char *cache_dir, size_t n_threads,
		ggml_backend_dev_t dev) {
	ggml_backend_dev_t devs[1] = {dev};
	((es_rpc_start_server_fn)fn)(endpoint, cache_dir, n_threads, 1, devs);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Device is one ggml backend device a model can place layers on: the local CPU, or a remote RPC
// worker's device.
type Device struct {
	Name        string // e.g. "CPU", "RPC0[127.0.0.1:50052]"
	Description string
	FreeBytes   uint64 // as the device reported when it was added
	TotalBytes  uint64
	Endpoint    string // the RPC worker's HOST:PORT; "" for a local device
	c           C.ggml_backend_dev_t
}

var rpcMu sync.Mutex // ggml's RPC registry is process-wide; one caller adds servers at a time

// rpcProc returns the RPC backend's exported function name, or an error saying the plugin is missing.
func rpcProc(name string) (unsafe.Pointer, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	cname := C.CString("RPC")
	defer C.free(unsafe.Pointer(cname))
	reg := C.ggml_backend_reg_by_name(cname)
	if reg == nil {
		return nil, errors.New("binding: ggml's RPC backend is not installed (libggml-rpc.so next to the CPU backends; " +
			"Debian: the libggml0-backend-rpc package)")
	}
	cfn := C.CString(name)
	defer C.free(unsafe.Pointer(cfn))
	fn := C.ggml_backend_reg_get_proc_address(reg, cfn)
	if fn == nil {
		return nil, fmt.Errorf("binding: ggml's RPC backend has no %s (a different ggml version?)", name)
	}
	return fn, nil
}

// AddRPCServer connects to the RPC worker at endpoint (HOST:PORT) and returns its devices, to be
// given to WithDevices. The devices are not registered process-wide: only models loaded with them
// use them.
//
// llama.cpp's RPC client aborts the whole process when it cannot connect, when the worker speaks
// another protocol version, and when a worker is lost while in use (ggml-rpc.cpp's GGML_ABORT), so
// callers probe the worker first (ggmlrpc.Probe) and keep a process that uses workers apart from
// one that must survive losing them.
func AddRPCServer(endpoint string) ([]Device, error) {
	fn, err := rpcProc("ggml_backend_rpc_add_server")
	if err != nil {
		return nil, err
	}
	rpcMu.Lock()
	defer rpcMu.Unlock()
	cep := C.CString(endpoint)
	defer C.free(unsafe.Pointer(cep))
	var reg C.ggml_backend_reg_t
	logged := captureErrors(func() { reg = C.es_rpc_add_server(fn, cep) })
	if reg == nil {
		return nil, fmt.Errorf("binding: add rpc worker %s: %s", endpoint, orUnknown(logged))
	}
	n := int(C.ggml_backend_reg_dev_count(reg))
	if n == 0 {
		return nil, fmt.Errorf("binding: rpc worker %s offers no device", endpoint)
	}
	devs := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d := deviceFromC(C.ggml_backend_reg_dev_get(reg, C.size_t(i)))
		d.Endpoint = endpoint
		devs = append(devs, d)
	}
	return devs, nil
}

func deviceFromC(dev C.ggml_backend_dev_t) Device {
	var props C.struct_ggml_backend_dev_props
	C.ggml_backend_dev_get_props(dev, &props)
	return Device{
		Name:        C.GoString(props.name),
		Description: C.GoString(props.description),
		FreeBytes:   uint64(props.memory_free),
		TotalBytes:  uint64(props.memory_total),
		c:           dev,
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "llama.cpp gave no reason"
	}
	return s
}

// CPUDevice is the local CPU device (where layers that are not offloaded run).
func CPUDevice() (Device, error) {
	if err := Init(); err != nil {
		return Device{}, err
	}
	dev := C.ggml_backend_dev_by_type(C.GGML_BACKEND_DEVICE_TYPE_CPU)
	if dev == nil {
		return Device{}, errors.New("binding: no CPU device is registered")
	}
	return deviceFromC(dev), nil
}

// WithDevices places offloaded layers on devs (llama_model_params.devices) instead of every device
// ggml has registered. Layers that are not offloaded (see WithGPULayers) stay on the local CPU.
func WithDevices(devs []Device) ModelOption {
	return func(p *ModelParams) { p.Devices = append([]Device(nil), devs...) }
}

// WithTensorSplit weights how offloaded layers are divided among the devices of WithDevices, one
// non-negative weight per device (llama_model_params.tensor_split).
func WithTensorSplit(weights []float32) ModelOption {
	return func(p *ModelParams) { p.TensorSplit = append([]float32(nil), weights...) }
}

// setDevices fills cp's devices and tensor_split from p, allocating the C arrays llama.cpp reads
// during the load; the returned function frees them.
func (p *ModelParams) setDevices(cp *C.struct_llama_model_params) (func(), error) {
	if len(p.Devices) == 0 && len(p.TensorSplit) == 0 {
		return func() {}, nil
	}
	max := int(C.llama_max_devices())
	if len(p.Devices) > max || len(p.TensorSplit) > max {
		return nil, fmt.Errorf("binding: %d devices / %d split weights: llama.cpp supports at most %d devices", len(p.Devices), len(p.TensorSplit), max)
	}
	if len(p.TensorSplit) > 0 && len(p.Devices) > 0 && len(p.TensorSplit) != len(p.Devices) {
		return nil, fmt.Errorf("binding: %d split weights for %d devices", len(p.TensorSplit), len(p.Devices))
	}
	var frees []func()
	if len(p.Devices) > 0 {
		devs := (*C.ggml_backend_dev_t)(C.calloc(C.size_t(len(p.Devices)+1), C.size_t(unsafe.Sizeof(C.ggml_backend_dev_t(nil)))))
		ds := unsafe.Slice(devs, len(p.Devices)+1)
		for i, d := range p.Devices {
			if d.c == nil {
				C.free(unsafe.Pointer(devs))
				return nil, fmt.Errorf("binding: device %d (%q) did not come from AddRPCServer or CPUDevice", i, d.Name)
			}
			ds[i] = d.c
		}
		cp.devices = devs
		frees = append(frees, func() { C.free(unsafe.Pointer(devs)) })
	}
	if len(p.TensorSplit) > 0 {
		split := (*C.float)(C.calloc(C.size_t(max), C.size_t(unsafe.Sizeof(C.float(0)))))
		ss := unsafe.Slice(split, max)
		for i, w := range p.TensorSplit {
			if w < 0 {
				C.free(unsafe.Pointer(split))
				for _, f := range frees {
					f()
				}
				return nil, fmt.Errorf("binding: split weight %d is negative (%g)", i, w)
			}
			ss[i] = C.float(w)
		}
		cp.tensor_split = split
		frees = append(frees, func() { C.free(unsafe.Pointer(split)) })
	}
	return func() {
		for _, f := range frees {
			f()
		}
	}, nil
}

// ServeRPC runs ggml's RPC server on endpoint (HOST:PORT), exposing the local CPU device with
// threads compute threads; cacheDir ("" = none) lets clients skip sending tensors the worker has
// cached. It does not return while serving: ggml's server has no way to stop but ending the process.
// It returns an error when the server could not start (e.g. the port is taken).
func ServeRPC(endpoint, cacheDir string, threads int) error {
	fn, err := rpcProc("ggml_backend_rpc_start_server")
	if err != nil {
		return err
	}
	cpu := C.ggml_backend_dev_by_type(C.GGML_BACKEND_DEVICE_TYPE_CPU)
	if cpu == nil {
		return errors.New("binding: no CPU device is registered")
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	cep := C.CString(endpoint)
	defer C.free(unsafe.Pointer(cep))
	var cdir *C.char
	if cacheDir != "" {
		cdir = C.CString(cacheDir)
		defer C.free(unsafe.Pointer(cdir))
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Not under captureErrors: the server runs for the life of the process and would fill it.
	C.es_rpc_start_server(fn, cep, cdir, C.size_t(threads), cpu)
	return fmt.Errorf("binding: rpc server on %s stopped (llama.cpp's log says why)", endpoint)
}
