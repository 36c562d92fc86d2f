// Command nodemesh-controller serves node Envoys their xDS; see internal/cli.
package main

import (
	"os"

	"github.com/nodemesh/nodemesh/internal/cli"
)

func main() {
	os.Exit(cli.ExecuteController(os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}
