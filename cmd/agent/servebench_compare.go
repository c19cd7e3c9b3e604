package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/expertsniper/expertsniper/server/loadgen"
)

// loadComparison is one load (a number of concurrent clients) run against both servers.
type loadComparison struct {
	Clients int            `json:"clients"`
	Agent   loadgen.Report `json:"agent"`
	Stock   loadgen.Report `json:"stock"`
}

// Ratio is agent serve's generated tokens per second over the stock server's.
func (c loadComparison) Ratio() float64 {
	if c.Stock.TokensPerSecond() == 0 {
		return 0
	}
	return c.Agent.TokensPerSecond() / c.Stock.TokensPerSecond()
}

// compareServers runs each of o.Loads against agent serve at url and the stock server at o.Against,
// one server after the other at each load (so that both see the machine in the same state), after
// one untimed request to each (first-touch costs: page faults, the first expert reads).
func compareServers(ctx context.Context, streams *IOStreams, o *serveBenchOptions, url string) error {
	loads := o.Loads.Value()
	if len(loads) == 0 {
		return usagef("--loads needs at least one number of clients")
	}
	for _, n := range loads {
		if n < 1 {
			return usagef("--loads: %d clients: every load needs at least 1", n)
		}
	}
	against := strings.TrimRight(o.Against, "/")
	config := func(base, key string, clients, requests int) loadgen.Config {
		return loadgen.Config{URL: base, APIKey: key, Clients: clients, Requests: requests, MaxTokens: o.MaxTokens, Stream: o.Stream}
	}
	for _, side := range []struct{ name, url, key string }{{"agent serve", url, o.APIKey}, {"stock server", against, ""}} {
		fmt.Fprintf(streams.ErrOut, "warm-up: one request to %s at %s\n", side.name, side.url)
		rep, err := loadgen.Run(ctx, config(side.url, side.key, 1, 1))
		if err != nil {
			return fmt.Errorf("warm up %s: %w", side.name, err)
		}
		if rep.Failed > 0 {
			return fmt.Errorf("warm up %s: %s", side.name, strings.Join(rep.Errors, "; "))
		}
	}
	var runs []loadComparison
	for _, n := range loads {
		c := loadComparison{Clients: n}
		var err error
		fmt.Fprintf(streams.ErrOut, "load: %d clients × %d requests, max_tokens %d, stream %s, against agent serve (%s)\n", n, o.Requests, o.MaxTokens, o.Stream, url)
		if c.Agent, err = loadgen.Run(ctx, config(url, o.APIKey, n, o.Requests)); err != nil {
			return fmt.Errorf("load agent serve: %w", err)
		}
		fmt.Fprintf(streams.ErrOut, "load: the same against the stock server (%s)\n", against)
		if c.Stock, err = loadgen.Run(ctx, config(against, "", n, o.Requests)); err != nil {
			return fmt.Errorf("load the stock server: %w", err)
		}
		runs = append(runs, c)
	}
	if o.JSON {
		type row struct {
			loadComparison
			AgentTokensPerSecond float64 `json:"agent_tokens_per_second"`
			StockTokensPerSecond float64 `json:"stock_tokens_per_second"`
			Ratio                float64 `json:"ratio"`
			ExpertBytesPerToken  float64 `json:"agent_expert_bytes_per_token"`
		}
		var rows []row
		for _, c := range runs {
			rows = append(rows, row{c, c.Agent.TokensPerSecond(), c.Stock.TokensPerSecond(), c.Ratio(), c.Agent.ExpertBytesPerToken()})
		}
		enc := json.NewEncoder(streams.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		printComparison(streams, runs)
	}
	var failed []string
	for _, c := range runs {
		for _, r := range []struct {
			name string
			rep  loadgen.Report
		}{{"agent serve", c.Agent}, {"stock server", c.Stock}} {
			if r.rep.Failed > 0 {
				failed = append(failed, fmt.Sprintf("%s, %d clients: %d of %d requests failed (%s)", r.name, c.Clients, r.rep.Failed, r.rep.Requests, strings.Join(r.rep.Errors, "; ")))
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "\n"))
	}
	return nil
}

func printComparison(streams *IOStreams, runs []loadComparison) {
	tw := tabwriter.NewWriter(streams.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tagent tok/s\tstock tok/s\tagent/stock\tagent p50\tstock p50\tagent expert MiB/token\t")
	for _, c := range runs {
		fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f×\t%v\t%v\t%.1f\t\n", c.Clients, c.Agent.TokensPerSecond(), c.Stock.TokensPerSecond(),
			c.Ratio(), c.Agent.LatencyP50.Round(1e6), c.Stock.LatencyP50.Round(1e6), c.Agent.ExpertBytesPerToken()/(1<<20))
	}
	tw.Flush()
	// The sniper criterion: concurrent clients should share a step's expert reads.
	if len(runs) > 1 && runs[0].Agent.TokensPerSecond() > 0 {
		first, last := runs[0], runs[len(runs)-1]
		fmt.Fprintf(streams.Out, "agent serve, %d clients vs %d: %.2f× the tokens/s, %.1f vs %.1f MiB of experts read per generated token\n",
			last.Clients, first.Clients, last.Agent.TokensPerSecond()/first.Agent.TokensPerSecond(),
			last.Agent.ExpertBytesPerToken()/(1<<20), first.Agent.ExpertBytesPerToken()/(1<<20))
	}
}
