package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/server/loadgen"
)

func init() { register(serveBenchCommand) }

type serveBenchOptions struct {
	serve     serveOptions // used when no --url is given: an in-process server on -m
	URL       string
	APIKey    string
	Clients   int
	Requests  int
	MaxTokens int
	Stream    string
	JSON      bool
	// Against is a stock llama-server's base URL: the same loads run against both servers.
	Against string
	Loads   cli.IntSlice
}

func serveBenchCommand(streams *IOStreams) *cli.Command {
	o := &serveBenchOptions{}
	flags := append(serveFlags(&o.serve),
		&cli.StringFlag{Name: "url", Usage: "base URL of a running server (e.g. http://127.0.0.1:8080); without it, -m starts one in this process", Destination: &o.URL},
		&cli.StringFlag{Name: "api-key", Usage: "the server's API key", EnvVars: serveEnv("API_KEY"), Destination: &o.APIKey},
		&cli.IntFlag{Name: "clients", Value: 8, Usage: "concurrent clients", Destination: &o.Clients},
		&cli.IntFlag{Name: "requests", Value: 50, Usage: "requests per client", Destination: &o.Requests},
		&cli.IntFlag{Name: "max-tokens", Value: 16, Usage: "max_tokens of every request", Destination: &o.MaxTokens},
		&cli.StringFlag{Name: "stream", Value: "mixed", Usage: "on, off or mixed (every other request streamed)", Destination: &o.Stream},
		&cli.BoolFlag{Name: "json", Usage: "print the report as JSON", Destination: &o.JSON},
		&cli.StringFlag{Name: "against", Usage: "base URL of a stock llama-server (same model and flags): run each of --loads against both servers and print the ratio", Destination: &o.Against},
		&cli.IntSliceFlag{Name: "loads", Value: cli.NewIntSlice(1, 4), Usage: "with --against: the numbers of concurrent clients to compare at (--clients is ignored)", Destination: &o.Loads},
	)
	for _, f := range flags {
		if pf, ok := f.(*cli.IntFlag); ok && pf.Name == "parallel" {
			pf.Value = 4 // the load test's -np 4
		}
	}
	return &cli.Command{
		Name:  "serve-bench",
		Usage: "load-test agent serve: concurrent chat clients, every answer checked, server RSS sampled",
		Description: "Runs --clients × --requests chat completions (half streamed by default) against --url, or against\n" +
			"a server it starts on -m with -np slots (default 4), and prints throughput, latency, queueing and the\n" +
			"server's RSS and expert bytes read per generated token over the run. Fails when any request fails or\n" +
			"returns an incomplete answer. With --against URL of a stock llama-server, it runs each of --loads\n" +
			"(default 1 and 4 concurrent clients, --requests each) against both servers, one after the other, and\n" +
			"prints both throughputs and their ratio.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("serve-bench takes no arguments, got %q", c.Args().Slice())
			}
			return runServeBench(c.Context, streams, o)
		},
	}
}

func runServeBench(ctx context.Context, streams *IOStreams, o *serveBenchOptions) error {
	if o.Clients < 1 || o.Requests < 1 || o.MaxTokens < 1 {
		return usagef("--clients, --requests and --max-tokens must be at least 1")
	}
	url := o.URL
	if url == "" {
		// Start `agent serve` in this process on a free loopback port, and stop it afterwards.
		srvOpts := o.serve
		srvOpts.Host, srvOpts.Port, srvOpts.MaxBody = "127.0.0.1", 0, "16MiB"
		srvOpts.APIKey = o.APIKey
		srvOpts.ContextDir = ""
		ready := make(chan string, 1)
		srvOpts.ready = func(addr string) { ready <- addr }
		srvCtx, stop := context.WithCancel(ctx)
		defer stop()
		// The in-process server's request log would drown the report.
		quiet := &IOStreams{In: streams.In, Out: io.Discard, ErrOut: io.Discard}
		done := make(chan error, 1)
		go func() { done <- runServe(srvCtx, quiet, &srvOpts) }()
		select {
		case addr := <-ready:
			url = "http://" + addr
		case err := <-done:
			return fmt.Errorf("start the server: %w", err)
		}
		defer func() { stop(); <-done }()
		if err := waitHealthy(ctx, url, done); err != nil {
			return err
		}
	}
	if o.Against != "" {
		return compareServers(ctx, streams, o, url)
	}
	fmt.Fprintf(streams.ErrOut, "load: %d clients × %d requests, max_tokens %d, stream %s, against %s\n",
		o.Clients, o.Requests, o.MaxTokens, o.Stream, url)
	rep, err := loadgen.Run(ctx, loadgen.Config{URL: url, APIKey: o.APIKey, Clients: o.Clients, Requests: o.Requests,
		MaxTokens: o.MaxTokens, Stream: o.Stream})
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(streams.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"report": rep, "requests_per_second": rep.RequestsPerSecond(),
			"tokens_per_second": rep.TokensPerSecond(), "rss_growth_bytes": rep.RSSGrowth(),
			"rss_growth_after_warmup_bytes": rep.RSSGrowthAfterWarmup()}); err != nil {
			return err
		}
	} else {
		rep.Print(streams.Out)
	}
	if rep.Failed > 0 {
		return fmt.Errorf("%d of %d requests failed or were incomplete", rep.Failed, rep.Requests)
	}
	return nil
}

// waitHealthy waits until /health answers 200 (the model is loaded) or the server gives up.
func waitHealthy(ctx context.Context, url string, done <-chan error) error {
	for {
		resp, err := httpGet(ctx, url+"/health")
		if err == nil && resp == 200 {
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("the server stopped before it was ready: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func httpGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
