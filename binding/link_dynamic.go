//go:build !llamastatic

package binding

// Linking against the llama.cpp found by pkg-config (system packages, Homebrew, the Debian build
// root, or ./build.sh --from-source's prefix through PKG_CONFIG_PATH). build.sh checks that it is
// b11669 with a compile probe before building; a static build would add a link_static.go under the
// llamastatic tag, so that choosing a link mode never means editing files.

/*
#cgo pkg-config: llama ggml
#cgo CFLAGS: -O2
*/
import "C"
