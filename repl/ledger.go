package repl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/expertsniper/expertsniper/agentmode"
)

// Totals are the session's token counts, for /cost and /stats.
type Totals struct {
	Turns           int
	Calls           int
	PromptTokens    int // every token of every prompt, as a cloud API would bill it
	CachedTokens    int // of which reused from the KV cache here
	GeneratedTokens int
	PromptMS        float64
	GeneratedMS     float64
}

// Add counts one turn.
func (t *Totals) Add(u agentmode.Usage) {
	t.Turns++
	t.Calls += u.Calls
	t.PromptTokens += u.PromptTokens + u.CachedTokens
	t.CachedTokens += u.CachedTokens
	t.GeneratedTokens += u.GeneratedTokens
	t.PromptMS += u.PromptMS
	t.GeneratedMS += u.GeneratedMS
}

// Cost is what the tokens would have cost at p.
func (t Totals) Cost(p Prices) (input, output float64) {
	return float64(t.PromptTokens) / 1e6 * p.InputPerMillion, float64(t.GeneratedTokens) / 1e6 * p.OutputPerMillion
}

// CostReport is the text of /cost.
func (t Totals) CostReport(p Prices) string {
	in, out := t.Cost(p)
	var b strings.Builder
	fmt.Fprintf(&b, "This session: %s, %s, %s, %s.\n", plural(t.Turns, "turn"), plural(t.Calls, "model call"),
		plural(t.PromptTokens, "input token"), plural(t.GeneratedTokens, "output token"))
	label := p.Label
	if label == "" {
		label = "the configured cloud prices"
	}
	fmt.Fprintf(&b, "At %s ($%.2f in / $%.2f out per 1M tokens) that would have cost $%.4f ($%.4f in + $%.4f out).\n",
		label, p.InputPerMillion, p.OutputPerMillion, in+out, in, out)
	b.WriteString("Here it cost $0: it ran on this machine.")
	return b.String()
}

// Grade is one line of grades.jsonl.
type Grade struct {
	Time    time.Time `json:"time"`
	Grade   string    `json:"grade"` // "good" or "bad"
	Route   string    `json:"route"`
	Model   string    `json:"model"`
	Request string    `json:"request"`
	Answer  string    `json:"answer"`
	Note    string    `json:"note,omitempty"`
	Tokens  int       `json:"tokens"`
}

// AppendGrade adds g to the JSON-lines file at path, creating it and its directory.
func AppendGrade(path string, g Grade) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save grade: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("save grade: %w", err)
	}
	line, err := json.Marshal(g)
	if err != nil {
		f.Close()
		return fmt.Errorf("save grade: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save grade to %q: %w", path, err)
	}
	return f.Close()
}

// ReadGrades reads grades.jsonl; a missing file has no grades. Malformed lines are counted, not fatal:
// the user may have edited the file by hand.
func ReadGrades(path string) (grades []Grade, bad int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read grades: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var g Grade
		if json.Unmarshal(sc.Bytes(), &g) != nil || (g.Grade != "good" && g.Grade != "bad") {
			bad++
			continue
		}
		grades = append(grades, g)
	}
	if err := sc.Err(); err != nil {
		return grades, bad, fmt.Errorf("read grades %q: %w", path, err)
	}
	return grades, bad, nil
}

// RouteGrades are the grades of one route.
type RouteGrades struct {
	Route     string
	Good, Bad int
}

// GradesByRoute groups grades by route, worst share of good answers first.
func GradesByRoute(grades []Grade) []RouteGrades {
	by := map[string]*RouteGrades{}
	for _, g := range grades {
		r := by[g.Route]
		if r == nil {
			r = &RouteGrades{Route: g.Route}
			by[g.Route] = r
		}
		if g.Grade == "good" {
			r.Good++
		} else {
			r.Bad++
		}
	}
	out := make([]RouteGrades, 0, len(by))
	for _, r := range by {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		si, sj := out[i].share(), out[j].share()
		if si != sj {
			return si < sj
		}
		return out[i].Route < out[j].Route
	})
	return out
}

func (r RouteGrades) share() float64 { return float64(r.Good) / float64(r.Good+r.Bad) }

// ImproveReport is the text of /improve: grading stats by route and what to try for the weakest one.
func ImproveReport(grades []Grade, malformed int) string {
	if len(grades) == 0 {
		return "No grades yet: grade answers with /good or /bad, then /improve shows which routes work."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %6s %6s %8s\n", "route", "good", "bad", "good %")
	routes := GradesByRoute(grades)
	for _, r := range routes {
		fmt.Fprintf(&b, "%-8s %6d %6d %7.0f%%\n", r.Route, r.Good, r.Bad, 100*r.share())
	}
	if malformed > 0 {
		fmt.Fprintf(&b, "(%d unreadable lines skipped)\n", malformed)
	}
	worst := routes[0]
	if worst.Bad == 0 {
		b.WriteString("Every graded answer was good.")
		return strings.TrimRight(b.String(), "\n")
	}
	fmt.Fprintf(&b, "Weakest route: %s. ", worst.Route)
	switch worst.Route {
	case string(agentmode.RouteSearch):
		b.WriteString("Try /search with your own keywords, or a bigger model for query rewriting (/model).")
	case string(agentmode.RouteShell):
		b.WriteString("Check the commands before saying y; a bigger model writes better commands (/model).")
	case string(agentmode.RouteChat), string(agentmode.RouteRaw):
		b.WriteString("Try a bigger model (/model), a system prompt (--system), or /raw if routing gets in the way.")
	default:
		b.WriteString("Try a bigger model (/model).")
	}
	return b.String()
}
