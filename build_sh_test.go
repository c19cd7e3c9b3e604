package expertsniper_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildShLeavesNoPartialRootWhenDebootstrapFails runs build.sh with a debootstrap that fails half
// way (as it does offline) and checks that the half-made build root is removed and the message points
// at the log. The fake tools on PATH make it safe to run anywhere: nothing is installed or mounted.
func TestBuildShLeavesNoPartialRootWhenDebootstrapFails(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	fake := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		// debootstrap [options] SUITE TARGET MIRROR: writes part of a root, then fails.
		"debootstrap": `#!/bin/sh
n=$(($# - 1)); eval "target=\${$n}"
mkdir -p "$target/usr/lib" && echo partial > "$target/usr/lib/half-written"
echo "E: Failed getting release file" >&2
exit 1
`,
		"id":      "#!/bin/sh\necho 0\n",
		"apt-get": "#!/bin/sh\nexit 0\n",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(fake, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(tmp, "cache", "sid-test")
	// The cache directory exists, as it does after any earlier run (the log goes there).
	if err := os.MkdirAll(filepath.Join(tmp, "xdg", "expertsniper"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "build.sh", "build")
	cmd.Env = append(os.Environ(),
		"PATH="+fake+string(os.PathListSeparator)+filepath.Dir(goBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"EXPERTSNIPER_ROOT="+root, "XDG_CACHE_HOME="+filepath.Join(tmp, "xdg"), "EXPERTSNIPER_FORCE_ROOT=1",
		"EXPERTSNIPER_MIRROR=http://mirror.invalid/debian", "EXPERTSNIPER_IN_ROOT=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("build.sh succeeded with a failing debootstrap:\n%s", out)
	}
	if !strings.Contains(string(out), "debootstrap failed") {
		t.Errorf("the error does not say what failed:\n%s", out)
	}
	for _, p := range []string{root + ".tmp", root} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("build.sh left %s behind:\n%s", p, out)
		}
	}
}
