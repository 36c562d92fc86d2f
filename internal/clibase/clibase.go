// Package clibase is what nodemesh's three command lines (nodemesh,
// nodemesh-controller, nodemesh-agent) share: the root command and its
// conventions (streams, exit codes, usage errors, the version command),
// kubectl's connection flags, and the logging flags with the logger they
// make — client-go's klog included, so that each binary logs in one format.
// It is small on purpose: nodemesh-agent links it without the translator,
// the xDS server or the installer (internal/cli links those).
//
// It may import client-go, cobra and klog; nothing of nodemesh.
package clibase

import (
	"fmt"
	"io"
)

// Exit codes.
const (
	ExitOK = 0
	// ExitFindings: the command ran and found a problem (or failed).
	ExitFindings = 1
	ExitUsage    = 2
)

// IO are a command's streams.
type IO struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// ExitError carries an exit code through cobra; Err (if any) is printed.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

// UsageError is an error of the command line (exit status ExitUsage).
func UsageError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}
