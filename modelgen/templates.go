package modelgen

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

// The real, public chat templates of tool-capable model families (as their GGUFs carry them), so
// that generated models exercise each family's prompt and tool-call format end to end.
//
//go:embed templates/*.jinja
var templateFiles embed.FS

// TemplateFamilies lists the names ChatTemplateOf accepts: chatml (the default, no tools) and the
// families whose template files are embedded.
func TemplateFamilies() []string {
	out := []string{"chatml"}
	entries, _ := templateFiles.ReadDir("templates")
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".jinja"))
	}
	sort.Strings(out[1:])
	return out
}

// ChatTemplateOf returns a family's chat template text ("" or "chatml": the default ChatML).
func ChatTemplateOf(family string) (string, error) {
	if family == "" || family == "chatml" {
		return ChatTemplate, nil
	}
	b, err := templateFiles.ReadFile("templates/" + family + ".jinja")
	if err != nil {
		return "", fmt.Errorf("unknown chat template family %q (have %s)", family, strings.Join(TemplateFamilies(), ", "))
	}
	return string(b), nil
}
