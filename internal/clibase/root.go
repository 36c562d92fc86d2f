package clibase

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// Version is the binaries' version, set at build time with -ldflags
// "-X github.com/nodemesh/nodemesh/internal/clibase.Version=...".
var Version = "dev"

// NewRoot is the root command of the binary name: errors and usage are
// printed by Execute (not by cobra, which would print them twice), a bad
// flag is a usage error that points at --help, and it has a version
// command. It also makes name/Version the User-Agent of the binary's API
// requests.
func NewRoot(streams IO, name, short, long string) *cobra.Command {
	UserAgent = name + "/" + Version
	root := &cobra.Command{
		Use:           name,
		Short:         short,
		Long:          long,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the " + name + " version",
		Args:  cobra.NoArgs,
		Run:   func(*cobra.Command, []string) { fmt.Fprintln(streams.Out, name, Version) },
	})
	return root
}

// Execute runs a command tree and returns the process exit code: an
// ExitError's code (its error, if any, printed), ExitUsage for any other
// error — cobra's own (an unknown command, wrong arguments) and whatever a
// command returns unwrapped (see FailuresExit for trees that want those to
// be failures). Before the command runs, client-go's klog is routed through
// a text slog logger on stderr, so that a command without logging flags
// prints client-go's messages in the same format as a command with them.
func Execute(root *cobra.Command, args []string, streams IO) int {
	if f, ok := streams.ErrOut.(*os.File); ok {
		RouteKlog(slog.New(slog.NewTextHandler(f, nil)))
	}
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
	fmt.Fprintln(streams.ErrOut, "Error:", err)
	return ExitUsage
}

// FailuresExit makes the errors the RunE of cmd and of every command under
// it returns, when they carry no exit code, failures (ExitFindings) rather
// than usage errors; cobra's own errors stay usage errors.
func FailuresExit(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			err := run(c, args)
			var ee *ExitError
			if err != nil && !errors.As(err, &ee) {
				return &ExitError{Code: ExitFindings, Err: err}
			}
			return err
		}
	}
	for _, sub := range cmd.Commands() {
		FailuresExit(sub)
	}
}
