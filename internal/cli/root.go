package cli

import (
	"bytes"
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/nodemesh/nodemesh/internal/clibase"
)

// Exit codes.
const (
	ExitOK       = clibase.ExitOK
	ExitFindings = clibase.ExitFindings
	ExitUsage    = clibase.ExitUsage
)

// IO are a command's streams.
type IO = clibase.IO

// ExitError carries an exit code through cobra; Err (if any) is printed.
type ExitError = clibase.ExitError

// UsageError is an error of the command line (exit status ExitUsage).
func UsageError(format string, args ...any) error { return clibase.UsageError(format, args...) }

// jsonIndent re-indents JSON (protojson varies its whitespace on purpose;
// this makes output stable).
func jsonIndent(w *bytes.Buffer, raw []byte) error {
	if err := json.Indent(w, raw, "", "  "); err != nil {
		return err
	}
	w.WriteByte('\n')
	return nil
}

// NewRootCommand builds the command tree.
func NewRootCommand(streams IO, extra ...Commands) *cobra.Command {
	root := clibase.NewRoot(streams, "nodemesh", "Move Istio workloads off sidecars, one namespace at a time",
		`nodemesh runs Istio's traffic management (VirtualService, DestinationRule, …) on one
Envoy per node instead of a sidecar per pod, with eBPF for networking and policy.

It keeps your Istio configuration: 'nodemesh translate' shows what a node Envoy would
be given for a set of manifests, with Istio's names and defaults, and tells you what
it cannot honour.`)
	root.AddCommand(newTranslateCommand(streams), newProxyConfigCommand(streams), newMigrateCommand(streams), newAuthzCommand(streams))
	for _, more := range extra {
		root.AddCommand(more(streams)...)
	}
	return root
}

// Commands makes commands of the nodemesh root that live in packages of
// their own: the installer's (internal/installcli) links the Helm SDK,
// which nodemesh-controller, built from this package, must not carry.
type Commands func(IO) []*cobra.Command

// Execute runs the command line and returns the process exit code.
func Execute(args []string, streams IO, extra ...Commands) int {
	return clibase.Execute(NewRootCommand(streams, extra...), args, streams)
}

// KubeFlags are kubectl's connection flags (shared with nodemesh-agent).
type KubeFlags = clibase.KubeFlags
