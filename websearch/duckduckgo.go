package websearch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/html"
)

// DefaultDuckDuckGoURL is DuckDuckGo's JavaScript-free results page.
const DefaultDuckDuckGoURL = "https://html.duckduckgo.com/html/"

// DefaultTimeout bounds a search when DuckDuckGo.Timeout is 0.
const DefaultTimeout = 20 * time.Second

// maxPageBytes bounds what we read of a results page (real pages are ~30–60 KB).
const maxPageBytes = 4 << 20

// DuckDuckGo searches through DuckDuckGo's HTML endpoint and scrapes the result list.
type DuckDuckGo struct {
	// BaseURL is the results page; the query goes into its q parameter. Empty means DefaultDuckDuckGoURL
	// (tests point it at a local server).
	BaseURL string
	// Client sends the request; nil means http.DefaultClient.
	Client *http.Client
	// Timeout bounds the whole search (connecting, waiting for the answer, reading it); 0 means
	// DefaultTimeout. A server that accepts the connection and never answers must not hang the REPL.
	Timeout time.Duration
	// UserAgent is sent with the request; DuckDuckGo serves a challenge to some obvious bots.
	UserAgent string
}

var _ Searcher = (*DuckDuckGo)(nil)

// Name implements Searcher.
func (d *DuckDuckGo) Name() string { return "duckduckgo" }

// Search implements Searcher.
func (d *DuckDuckGo) Search(ctx context.Context, query string, max int) ([]Result, error) {
	query = strings.TrimSpace(query)
	if query == "" {
		return nil, ErrEmptyQuery
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	searchCtx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no answer within %s: %w", timeout, ErrTimeout))
	defer cancel()
	results, err := d.search(searchCtx, query)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(searchCtx), ErrTimeout) {
		err = context.Cause(searchCtx)
	}
	if err != nil {
		return nil, fmt.Errorf("search duckduckgo for %q: %w", query, err)
	}
	if max > 0 && len(results) > max {
		results = results[:max]
	}
	return results, nil
}

func (d *DuckDuckGo) search(ctx context.Context, query string) ([]Result, error) {
	base := d.BaseURL
	if base == "" {
		base = DefaultDuckDuckGoURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("parse search URL %q: %w", base, err)
	}
	q := u.Query()
	q.Set("q", query)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	ua := d.UserAgent
	if ua == "" {
		ua = "Mozilla/5.0 (X11; Linux x86_64) expertsniper-agent"
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Accept", "text/html")
	client := d.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err // *url.Error already names the method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPageBytes))
	if err != nil {
		return nil, fmt.Errorf("read results page: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode == http.StatusForbidden:
		// DuckDuckGo answers 202 with a challenge page when it rate-limits.
		return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, ErrBlocked)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("HTTP %s from %s", resp.Status, u.Host)
	}
	return ParseDuckDuckGo(strings.NewReader(string(body)))
}

// ParseDuckDuckGo extracts the organic results of a DuckDuckGo HTML results page, in page order. Ads are
// skipped and redirect links are resolved to the target URL. A page with no results gives an empty
// slice; a challenge page gives ErrBlocked.
func ParseDuckDuckGo(r io.Reader) ([]Result, error) {
	doc, err := html.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse results page: %w", err)
	}
	var (
		results []Result
		blocked bool
		walk    func(n *html.Node)
	)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if hasClass(n, "anomaly-modal__modal") || attr(n, "id") == "challenge-form" {
				blocked = true
			}
			if isResultBlock(n) {
				if res, ok := parseResult(n); ok {
					results = append(results, res)
				}
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if blocked && len(results) == 0 {
		return nil, ErrBlocked
	}
	return results, nil
}

func isResultBlock(n *html.Node) bool {
	return n.Data == "div" && hasClass(n, "result") && !hasClass(n, "result--ad") && !hasClass(n, "result--no-result")
}

func parseResult(block *html.Node) (Result, bool) {
	var res Result
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch {
			case n.Data == "a" && hasClass(n, "result__a") && res.URL == "":
				res.Title = collapse(text(n))
				res.URL = resolveRedirect(attr(n, "href"))
				return
			case hasClass(n, "result__snippet") && res.Snippet == "":
				res.Snippet = collapse(text(n))
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(block)
	if res.URL == "" || res.Title == "" {
		return Result{}, false
	}
	// Sponsored links go through DuckDuckGo's ad click endpoint even when the block is not marked.
	if strings.Contains(res.URL, "duckduckgo.com/y.js") {
		return Result{}, false
	}
	return res, true
}

// resolveRedirect turns DuckDuckGo's "//duckduckgo.com/l/?uddg=<target>" links into the target.
func resolveRedirect(href string) string {
	if href == "" {
		return ""
	}
	if strings.HasPrefix(href, "//") {
		href = "https:" + href
	}
	u, err := url.Parse(href)
	if err != nil {
		return href
	}
	if strings.HasSuffix(u.Host, "duckduckgo.com") && strings.HasPrefix(u.Path, "/l/") {
		if target := u.Query().Get("uddg"); target != "" {
			return target
		}
	}
	return u.String()
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

// IsNetworkError reports whether err came from failing to reach the provider at all (DNS, refused
// connection, timeout), as opposed to a bad answer from it.
func IsNetworkError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}
