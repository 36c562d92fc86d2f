// Command nodemesh-agent is nodemesh's node agent; see agent and
// internal/agentcli.
package main

import (
	"os"

	"github.com/nodemesh/nodemesh/internal/agentcli"
)

func main() {
	os.Exit(agentcli.Execute(os.Args[1:], agentcli.IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}
