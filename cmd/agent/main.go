// Command agent runs Mixture-of-Experts models that do not fit in RAM by streaming the experts the
// router picks from disk (the expert sniper), and runs models that fit in RAM as plain llama.cpp.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	os.Exit(int(run(ctx, os.Args, systemStreams())))
}
