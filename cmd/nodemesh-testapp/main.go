// Command nodemesh-testapp is the test application of 'nodemesh check' and
// the migration tests (the nodemesh-testapp image); see internal/testapp.
package main

import (
	"os"

	"github.com/nodemesh/nodemesh/internal/testapp"
)

func main() {
	ctx, stop := testapp.SignalContext()
	code := testapp.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
