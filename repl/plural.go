package repl

import "fmt"

// plural writes a count with its noun: "1 turn", "2 turns" (word + "s"; see pluralOf for others).
func plural[T ~int | ~int64](n T, word string) string { return pluralOf(n, word, word+"s") }

// pluralOf writes a count with the singular or plural form: pluralOf(n, "miss", "misses").
func pluralOf[T ~int | ~int64](n T, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
