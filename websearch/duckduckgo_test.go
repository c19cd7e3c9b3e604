package websearch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// ddgServer serves pages shaped like html.duckduckgo.com/html/ and records the queries it saw.
func ddgServer(t *testing.T, status int, page string) (*httptest.Server, *[]string) {
	t.Helper()
	body, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/html/" {
			http.NotFound(w, r)
			return
		}
		queries = append(queries, r.URL.Query().Get("q"))
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &queries
}

func TestDuckDuckGoParsesResultsSkipsAdsAndResolvesRedirects(t *testing.T) {
	srv, queries := ddgServer(t, http.StatusOK, "testdata/ddg_results.html")
	d := &DuckDuckGo{BaseURL: srv.URL + "/html/"}
	got, err := d.Search(context.Background(), "  golang generics & more ", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(*queries) != 1 || (*queries)[0] != "golang generics & more" {
		t.Fatalf("server saw queries %q", *queries)
	}
	want := []Result{
		{"Tutorial: Getting started with generics - The Go Programming Language", "https://go.dev/doc/tutorial/generics",
			"This tutorial introduces the basics of generics in Go. With generics, you can declare and use functions or types."},
		{"An Introduction To Generics", "https://go.dev/blog/intro-generics?x=1&y=2", "The Go 1.18 release adds support for generics."},
		{"constraints package", "https://pkg.go.dev/golang.org/x/exp/constraints", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestDuckDuckGoMaxResults(t *testing.T) {
	srv, _ := ddgServer(t, http.StatusOK, "testdata/ddg_results.html")
	got, err := (&DuckDuckGo{BaseURL: srv.URL + "/html/"}).Search(context.Background(), "go", 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("got %d results, err %v; want 2", len(got), err)
	}
}

func TestDuckDuckGoNoResults(t *testing.T) {
	srv, _ := ddgServer(t, http.StatusOK, "testdata/ddg_noresults.html")
	got, err := (&DuckDuckGo{BaseURL: srv.URL + "/html/"}).Search(context.Background(), "qqqzzzxxx", 5)
	if err != nil || len(got) != 0 {
		t.Fatalf("got %+v, %v; want no results and no error", got, err)
	}
}

func TestDuckDuckGoChallengeIsBlocked(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusAccepted} {
		srv, _ := ddgServer(t, status, "testdata/ddg_challenge.html")
		_, err := (&DuckDuckGo{BaseURL: srv.URL + "/html/"}).Search(context.Background(), "go", 5)
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("status %d: err = %v, want ErrBlocked", status, err)
		}
	}
}

func TestDuckDuckGoHTTPErrorNamesStatusAndQuery(t *testing.T) {
	srv, _ := ddgServer(t, http.StatusInternalServerError, "testdata/ddg_noresults.html")
	_, err := (&DuckDuckGo{BaseURL: srv.URL + "/html/"}).Search(context.Background(), "go tools", 5)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), `"go tools"`) {
		t.Fatalf("err = %v, want one naming HTTP 500 and the query", err)
	}
}

func TestDuckDuckGoNetworkFailure(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/html/"
	srv.Close() // nothing listens there any more
	_, err := (&DuckDuckGo{BaseURL: base}).Search(context.Background(), "go", 5)
	if err == nil || !IsNetworkError(err) || !strings.Contains(err.Error(), "duckduckgo") {
		t.Fatalf("err = %v, want a network error naming the provider", err)
	}
}

func TestDuckDuckGoHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&DuckDuckGo{BaseURL: srv.URL + "/html/"}).Search(ctx, "go", 5)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("search did not stop when its context ended")
	}
}

func TestDuckDuckGoEmptyQuery(t *testing.T) {
	if _, err := (&DuckDuckGo{BaseURL: "http://127.0.0.1:1/html/"}).Search(context.Background(), "  ", 5); !errors.Is(err, ErrEmptyQuery) {
		t.Fatalf("err = %v, want ErrEmptyQuery", err)
	}
}

// stalledListener accepts connections and never answers them.
func stalledListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/html/"
}

// TestDuckDuckGoTimesOutOnAServerThatNeverAnswers: a search whose server accepts and stays silent
// ends with an error that says so, after Timeout, even when the caller's context has no deadline.
func TestDuckDuckGoTimesOutOnAServerThatNeverAnswers(t *testing.T) {
	d := &DuckDuckGo{BaseURL: stalledListener(t), Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := d.Search(context.Background(), "anything", 5)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("got %v, want ErrTimeout naming the time", err)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("took %s", el)
	}
	// The default applies when Timeout is unset.
	if (&DuckDuckGo{}).Timeout != 0 || DefaultTimeout <= 0 || DefaultTimeout > time.Minute {
		t.Fatalf("DefaultTimeout %s", DefaultTimeout)
	}
}
