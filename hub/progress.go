package hub

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/expertsniper/expertsniper/bytesize"
)

// NewProgress returns a Progress that draws a bar redrawn in place when tty is true, and writes a
// plain line every 10% (or every 30 s) otherwise, so logs stay readable.
func NewProgress(w io.Writer, tty bool) Progress {
	return &textProgress{w: w, tty: tty, now: time.Now, doneNote: "checksum verified"}
}

// NewTaskProgress is NewProgress for work other than a download (e.g. merging a split model):
// doneNote ends the final line instead of "checksum verified".
func NewTaskProgress(w io.Writer, tty bool, doneNote string) Progress {
	return &textProgress{w: w, tty: tty, now: time.Now, doneNote: doneNote}
}

type textProgress struct {
	w        io.Writer
	tty      bool
	now      func() time.Time
	doneNote string

	name        string
	total, done int64
	started     time.Time
	startBytes  int64 // bytes present when this run started (not counted in the speed)
	lastDraw    time.Time
	lastPercent int
	// samples over the last few seconds give a speed that follows changes without jumping around.
	samples []sample
}

type sample struct {
	at    time.Time
	bytes int64
}

func (p *textProgress) Start(file string, total, have int64) {
	p.name, p.total, p.done, p.startBytes = file, total, have, have
	p.started = p.now()
	p.samples = []sample{{p.started, have}}
	p.lastPercent = percent(have, total) / 10 * 10
	if have == total {
		fmt.Fprintf(p.w, "%s: already downloaded (%s)\n", file, bytesize.Format(total))
		p.name = "" // Done prints nothing more
		return
	}
	if have > 0 {
		fmt.Fprintf(p.w, "%s: resuming at %s of %s\n", file, bytesize.Format(have), bytesize.Format(total))
	} else if !p.tty {
		fmt.Fprintf(p.w, "%s: downloading %s\n", file, bytesize.Format(total))
	}
	p.draw(true)
}

func (p *textProgress) Add(n int64) {
	p.done += n
	p.draw(false)
}

func (p *textProgress) Reset(have int64) {
	p.done, p.startBytes = have, have
	p.samples = []sample{{p.now(), have}}
	p.clearLine()
	fmt.Fprintf(p.w, "%s: the server ignored the resume request; starting over\n", p.name)
}

func (p *textProgress) Retry(err error, wait time.Duration) {
	p.clearLine()
	fmt.Fprintf(p.w, "%s: %v; retrying in %s\n", p.name, err, wait.Round(100*time.Millisecond))
}

func (p *textProgress) Done(err error) {
	if p.name == "" {
		return
	}
	p.clearLine()
	if err != nil {
		return // the caller reports the error
	}
	elapsed := p.now().Sub(p.started)
	fmt.Fprintf(p.w, "%s: done, %s in %s (%s/s)", p.name, bytesize.Format(p.total),
		elapsed.Round(time.Second), bytesize.Format(int64(rate(p.done-p.startBytes, elapsed))))
	if p.doneNote != "" {
		fmt.Fprintf(p.w, ", %s", p.doneNote)
	}
	fmt.Fprintln(p.w)
}

func (p *textProgress) clearLine() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func percent(done, total int64) int {
	if total <= 0 {
		return 100
	}
	return int(done * 100 / total)
}

func rate(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds()
}

// speed is bytes per second over the samples of the last 5 seconds.
func (p *textProgress) speed(now time.Time) float64 {
	p.samples = append(p.samples, sample{now, p.done})
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) > 5*time.Second {
		p.samples = p.samples[1:]
	}
	first := p.samples[0]
	return rate(p.done-first.bytes, now.Sub(first.at))
}

func (p *textProgress) draw(force bool) {
	now := p.now()
	pct := percent(p.done, p.total)
	if p.tty {
		if !force && now.Sub(p.lastDraw) < 100*time.Millisecond {
			return
		}
	} else if !force && pct < p.lastPercent+10 && now.Sub(p.lastDraw) < 30*time.Second {
		return
	}
	p.lastDraw = now
	speed := p.speed(now)
	eta := "--:--"
	if speed > 0 {
		eta = formatETA(time.Duration(float64(p.total-p.done) / speed * float64(time.Second)))
	}
	if !p.tty {
		if force {
			return // the start line was already written
		}
		p.lastPercent = pct / 10 * 10
		fmt.Fprintf(p.w, "%s: %3d%% %s / %s, %s/s, ETA %s\n", p.name, pct, bytesize.Format(p.done),
			bytesize.Format(p.total), bytesize.Format(int64(speed)), eta)
		return
	}
	const width = 24
	filled := width * pct / 100
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	name := p.name
	if len(name) > 40 {
		name = "…" + name[len(name)-39:]
	}
	fmt.Fprintf(p.w, "\r\033[K%s [%s] %3d%% %s / %s  %s/s  ETA %s", name, bar, pct, bytesize.Format(p.done),
		bytesize.Format(p.total), bytesize.Format(int64(speed)), eta)
}

func formatETA(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s%3600/60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
