// Command nodemesh-cni is nodemesh's CNI plugin, a thin client of the node
// agent; see agent/cni.
package main

import (
	"os"

	"github.com/nodemesh/nodemesh/agent/cni"
)

func main() {
	os.Exit(cni.Main())
}
