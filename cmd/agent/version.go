package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/binding"
)

// gitCommit is set by build.sh (-X main.gitCommit=...) from git; when it is empty (a plain go build),
// the Go toolchain's VCS stamp in the build info is used.
var gitCommit string

// ourVersion names this build of agent: the commit it was built from (+dirty with uncommitted changes),
// the Go version and the platform.
func ourVersion() string {
	rev, dirty := gitCommit, false
	if bi, ok := debug.ReadBuildInfo(); ok && rev == "" {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
	}
	if rev == "" {
		rev = "devel" // built without build.sh and without the toolchain's VCS stamp
	}
	return fmt.Sprintf("expertsniper %s (%s, %s/%s)", rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// printVersion writes ours, the llama.cpp build we target and link, and what llama.cpp says about the
// machine (its CPU features and backends: llama_print_system_info, after loading the backends).
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "agent      %s\n", ourVersion())
	v := binding.LibraryVersions()
	fmt.Fprintf(w, "llama.cpp  %s (libllama %s, ggml %s, ggml commit %s)\n", binding.TargetBuild, v.Llama, v.GGML, v.GGMLCommit)
	info, err := binding.SystemInfo()
	if err != nil {
		fmt.Fprintf(w, "backends   not loaded: %v\n", err)
		return
	}
	fmt.Fprintf(w, "system     %s\n", strings.TrimSpace(info))
}

func init() {
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the versions of agent and llama.cpp, and the CPU features llama.cpp uses"}
	cli.VersionPrinter = func(c *cli.Context) { printVersion(c.App.Writer) }
}
