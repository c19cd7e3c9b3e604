// Command agent runs Mixture-of-Experts models that do not fit in RAM by streaming the experts the
// router picks from disk (the expert sniper), and runs models that fit in RAM as plain llama.cpp.
package main

import (
	"context"
	"os"
)

func main() {
	ctx, stop := withSignals(context.Background())
	code := run(ctx, os.Args, systemStreams())
	stop()
	os.Exit(int(code))
}
