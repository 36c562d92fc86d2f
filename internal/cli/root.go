package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

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

// Version is set at build time with -ldflags "-X .../internal/cli.Version=...".
var Version = "dev"

// NewRootCommand builds the command tree.
func NewRootCommand(streams IO, extra ...Commands) *cobra.Command {
	root := &cobra.Command{
		Use:   "nodemesh",
		Short: "Move Istio workloads off sidecars, one namespace at a time",
		Long: `nodemesh runs Istio's traffic management (VirtualService, DestinationRule, …) on one
Envoy per node instead of a sidecar per pod, with eBPF for networking and policy.

It keeps your Istio configuration: 'nodemesh translate' shows what a node Envoy would
be given for a set of manifests, with Istio's names and defaults, and tells you what
it cannot honour.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newTranslateCommand(streams), newProxyConfigCommand(streams), newMigrateCommand(streams), newVersionCommand(streams))
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
	return execute(NewRootCommand(streams, extra...), args, streams)
}

// execute runs a command tree and maps its error to an exit code.
func execute(root *cobra.Command, args []string, streams IO) int {
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(streams.ErrOut, "Error:", ee.Err)
		}
		return ee.Code
	}
	// Cobra's own errors (unknown command, bad arguments) are usage errors.
	fmt.Fprintln(streams.ErrOut, "Error:", err)
	return ExitUsage
}

func newVersionCommand(streams IO) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the nodemesh version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(streams.Out, "nodemesh", Version)
		},
	}
}
