package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/expertsniper/expertsniper/memcap"
)

// TestRunDefaultsFitUnderAMemoryCap runs a model bigger than its memory cap with default flags under
// that cap (a memory cgroup, page cache included): the default budget must leave room for what the
// model takes besides its cache, so the run finishes, is not killed, and its peak RSS stays within
// the budget it chose. (The default used to be all of the cgroup's room for the weights alone, and
// the run was killed inside an 8 GiB cgroup; here it was killed too.) The model is 625 MiB of
// random-block experts under a 512 MiB cap; the prompt's prefill touches nearly every expert, more
// than the cap holds, so the cache fills and evicts.
func TestRunDefaultsFitUnderAMemoryCap(t *testing.T) {
	if err := memcap.Supported(); err != nil {
		t.Fatalf("memory cgroups must work on the test machines: %v", err)
	}
	isolateUserDirs(t)
	const limit = 512 << 20
	dir := t.TempDir()
	model := filepath.Join(dir, "big.gguf")
	if _, stderr, code := runAgentForTest(t, "mkmodel", "--experts", "64", "--layers", "48", "--random-quants", "yes", "-o", model); code != exitOK {
		t.Fatalf("mkmodel: exit %d\n%s", code, stderr)
	}
	if st, err := os.Stat(model); err != nil || st.Size() <= limit {
		t.Fatalf("the model must be bigger than the cap: %v, %d bytes", err, st.Size())
	}
	bin := buildAgent(t)
	// The program and the model were just written by this test, so their page cache is charged to
	// the test, not to the run; on a loaded machine the kernel may drop it and the run brings it back,
	// charged to the run. Drop it now so the run is always charged for everything it reads.
	dropPageCache(t, bin, model)
	statsPath := filepath.Join(dir, "stats.json")
	var stdout, stderr bytes.Buffer
	res, err := memcap.Run(t.Context(), memcap.Spec{
		Path: bin, Args: []string{"agent", "run", "-m", model, "-p", strings.Repeat(runTestPrompt+" ", 8), "-n", "8", "-t", "2", "--rss-sample", "5ms", "--stats-json", statsPath},
		Stdout: &stdout, Stderr: &stderr, Limit: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("under a cap of %s: maxrss %s, cgroup peak %s\n%s", memcap.FormatBytes(limit), memcap.FormatBytes(res.PeakRSS), memcap.FormatBytes(res.PeakUsage), stderr.String())
	t.Logf("the cgroup at its peak:\n%s", res.PeakBreakdown)
	if err := res.Err(); err != nil {
		t.Fatalf("agent run with default flags under a %s cap: %v", memcap.FormatBytes(limit), err)
	}
	rs := readRunStats(t, statsPath)
	if rs.Mode != "sniper" || rs.GeneratedTokens == 0 {
		t.Fatalf("mode %s, %d tokens generated", rs.Mode, rs.GeneratedTokens)
	}
	if rs.RAMBudget <= 0 || rs.RAMBudget >= limit {
		t.Fatalf("default budget %d under a cap of %d", rs.RAMBudget, limit)
	}
	if rs.BytesRead <= rs.CacheBudget {
		t.Fatalf("read %d bytes with a cache of %d: the cache never had to evict, the cap was not tested", rs.BytesRead, rs.CacheBudget)
	}
	// The budget holds what it promises: the resident set, sampled every 5 ms, and all the memory the
	// kernel charged to the run (page cache included) stay within it. (getrusage's maxrss, logged
	// above, also counts pages of the program and libraries that other processes brought in, and has
	// read up to 335 MiB here while the cgroup's own peak was 191 MiB.)
	if rs.PeakRSSBytes > rs.RAMBudget || rs.RSSSamples < 10 {
		t.Fatalf("sampled peak RSS %s (%d samples) is more than the budget %s", memcap.FormatBytes(rs.PeakRSSBytes), rs.RSSSamples, memcap.FormatBytes(rs.RAMBudget))
	}
	if res.PeakUsage > rs.RAMBudget {
		t.Fatalf("the cgroup's peak %s is more than the budget %s", memcap.FormatBytes(res.PeakUsage), memcap.FormatBytes(rs.RAMBudget))
	}
}

// dropPageCache asks the kernel to drop the cached pages of the files (pages mapped by a running
// process stay).
func dropPageCache(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		if err != nil {
			t.Fatalf("drop the page cache of %s: %v", p, err)
		}
	}
}
