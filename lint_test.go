package expertsniper_test

// House rules that are cheaper to enforce as a test than to review (pebble's internal/lint style).

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestCgoOnlyInBinding fails if any Go file outside binding/ imports "C": all cgo lives in one
// package, so a llama.cpp upgrade is a one-package diff and everything else builds without a C
// toolchain (and vets with GOOS=darwin).
func TestCgoOnlyInBinding(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "llama.cpp" || name == "bin" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			t.Errorf("parse %s: %v", path, err)
			return nil
		}
		checked++
		for _, imp := range f.Imports {
			if imp.Path.Value == `"C"` && filepath.Dir(path) != "binding" {
				t.Errorf("%s imports \"C\": cgo belongs in binding/ only", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d Go files checked: is the test running from the module root?", checked)
	}
}
