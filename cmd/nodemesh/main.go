// Command nodemesh is the nodemesh CLI; see internal/cli and
// internal/installcli.
package main

import (
	"os"

	"github.com/nodemesh/nodemesh/internal/cli"
	"github.com/nodemesh/nodemesh/internal/installcli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, installcli.Commands))
}
