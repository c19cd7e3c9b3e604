package tools

import (
	"strconv"
	"unicode/utf8"
)

// ShowExactly returns s as it must be shown to a user asked to approve it. When every character is
// visible, s is returned unchanged. Otherwise s is returned as a double-quoted string in which control
// characters, terminal escapes, invisible and bidirectional-override characters and invalid bytes are
// written as escapes (\r, \x1b, \u202e): shown raw, a carriage return or an escape sequence can make
// the screen show another command than the one that will run.
func ShowExactly(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		// strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space only.
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// quoteForQuestion puts s between backticks when it shows as it is, or gives its escaped form and says
// why.
func quoteForQuestion(s string) string {
	if shown := ShowExactly(s); shown != s {
		return shown + " (it contains control or invisible characters, shown as escapes)"
	}
	return "`" + s + "`"
}
