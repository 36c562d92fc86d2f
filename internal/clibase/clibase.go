// Package clibase is what nodemesh's command lines share: streams, exit
// codes, errors that carry an exit code, kubectl's connection flags and
// logging flags. It is small on purpose: nodemesh-agent links it without
// the translator, the xDS server or the installer (internal/cli links those).
package clibase

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
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

// UserAgent is what RestConfig sends the API server (set by each binary).
var UserAgent = "nodemesh"

// KubeFlags are kubectl's connection flags.
type KubeFlags struct {
	Kubeconfig string
	Context    string
}

// Add registers --kubeconfig and --context.
func (k *KubeFlags) Add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account)")
	cmd.Flags().StringVar(&k.Context, "context", "", "the kubeconfig context to use (default: the current context)")
}

// Loader is kubectl's kubeconfig resolution with the flags applied.
func (k *KubeFlags) Loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.Kubeconfig != "" {
		rules.ExplicitPath = k.Kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context})
}

// RestConfig resolves the API server connection; without a kubeconfig it
// falls back to the in-cluster configuration.
func (k *KubeFlags) RestConfig() (*rest.Config, error) {
	cfg, err := k.Loader().ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = UserAgent
	return cfg, nil
}

// NewLogger is the logger of --log-level and --log-format (json or text).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, UsageError("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, UsageError("--log-format %q: want json or text", format)
}
