// Package websearch finds web pages for a query. Providers sit behind the Searcher interface so that
// agent mode does not care where results come from; DuckDuckGo's HTML endpoint is the default because it
// needs no API key.
package websearch

import (
	"context"
	"errors"
)

// Result is one hit: a page the answer may cite.
type Result struct {
	Title   string `json:"title"`
	URL     string `json:"url"`
	Snippet string `json:"snippet"`
}

// Searcher runs one web search. Implementations return at most max results (max <= 0: the provider's
// first page) and wrap failures with the provider's name and the query.
type Searcher interface {
	Name() string
	Search(ctx context.Context, query string, max int) ([]Result, error)
}

// ErrBlocked means the provider answered but refused to serve results (rate limit, bot challenge).
var ErrBlocked = errors.New("the search provider refused the request (rate limited or asked for a challenge); try again later")

// ErrTimeout means the provider did not answer in time.
var ErrTimeout = errors.New("the search provider did not answer in time")

// ErrEmptyQuery is returned for a query with no words.
var ErrEmptyQuery = errors.New("empty search query")
