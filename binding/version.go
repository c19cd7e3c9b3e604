package binding

// #include <llama.h>
// #include <ggml.h>
import "C"

// TargetBuild is the llama.cpp release this binding is written and tested against.
const TargetBuild = "b11669"

// Versions is what the linked libraries say about themselves.
type Versions struct {
	Llama      string // llama_version()
	GGML       string // ggml_version()
	GGMLCommit string // ggml_commit()
}

// LibraryVersions asks the linked llama.cpp and ggml for their versions (no backend is loaded).
func LibraryVersions() Versions {
	return Versions{
		Llama:      C.GoString(C.llama_version()),
		GGML:       C.GoString(C.ggml_version()),
		GGMLCommit: C.GoString(C.ggml_commit()),
	}
}
