// Package nodetest gives tests the Node.js clients in server/testdata/node (the official OpenAI SDK
// and playwright-core), installing them from the lock file on first use. Test packages run in
// parallel, so the install happens under a file lock: two `npm ci` at once would delete each other's
// files.
package nodetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Dir is the absolute path of server/testdata/node.
func Dir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("nodetest: cannot find its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "server", "testdata", "node")
}

// Require returns the node binary and the directory of the installed clients. A missing node or npm
// fails the test: these clients are required, not optional.
func Require(t testing.TB) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js is needed to run the official OpenAI SDK and playwright-core against the server and was not found: " +
			"install it (apt-get install nodejs npm; ./build.sh test installs them in the build root)")
	}
	dir = Dir(t)
	if installed(dir) {
		return node, dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is needed to install the test clients (npm ci --prefix %s) and was not found", dir)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("open the install lock: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock %s: %v", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if installed(dir) { // another test process installed them while we waited
		return node, dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefix", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci --prefix %s: %v\n%s", dir, err, out)
	}
	if !installed(dir) {
		t.Fatalf("npm ci --prefix %s did not install the clients", dir)
	}
	return node, dir
}

func installed(dir string) bool {
	for _, pkg := range []string{"openai", "playwright-core"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			return false
		}
	}
	return true
}
