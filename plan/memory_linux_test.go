package plan

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCgroupHeadroom(t *testing.T) {
	t.Run("v1 with a capped child, as the benchmark makes", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{
			"memory/memory.limit_in_bytes":         "9223372036854771712\n",
			"memory/memory.usage_in_bytes":         "5000000000\n",
			"memory/job/memory.limit_in_bytes":     "9223372036854771712\n",
			"memory/job/memory.usage_in_bytes":     "100\n",
			"memory/job/cap/memory.limit_in_bytes": "4294967296\n",
			"memory/job/cap/memory.usage_in_bytes": "1073741824\n",
			"memory/job/cap/memory.stat":           "cache 10\ntotal_inactive_file 536870912\n",
		})
		room, where, ok := cgroupHeadroom(root, "5:devices:/\n4:memory:/job/cap\n0::/\n")
		if !ok || room != 4294967296-1073741824+536870912 || where != "/job/cap" {
			t.Fatalf("room %d at %q, ok %v", room, where, ok)
		}
	})
	t.Run("v2 with a limit on the parent", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{
			"cgroup.controllers":      "cpu memory\n",
			"user/memory.max":         "8589934592\n",
			"user/memory.current":     "4294967296\n",
			"user/memory.stat":        "anon 1\ninactive_file 1073741824\n",
			"user/app/memory.max":     "max\n",
			"user/app/memory.current": "1000\n",
		})
		room, where, ok := cgroupHeadroom(root, "0::/user/app\n")
		if !ok || room != 8589934592-4294967296+1073741824 || where != "/user" {
			t.Fatalf("room %d at %q, ok %v", room, where, ok)
		}
	})
	t.Run("no limit anywhere", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{
			"memory/a/memory.limit_in_bytes": "9223372036854771712\n",
			"memory/a/memory.usage_in_bytes": "1\n",
		})
		if _, _, ok := cgroupHeadroom(root, "4:memory:/a\n"); ok {
			t.Fatal("an unlimited cgroup reported a limit")
		}
	})
}
