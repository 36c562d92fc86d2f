package testapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Version is the build's version, set with -ldflags
// "-X github.com/nodemesh/nodemesh/internal/testapp.Version=..." (make
// images stamps the same version as the image's tag).
var Version = "dev"

// Exit codes, as the other nodemesh commands use them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// commands are the subcommands, by name.
var commands = map[string]struct {
	short string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}{
	"netexec": {"serve agnhost netexec's HTTP (and UDP) endpoints: the echo server of 'nodemesh check'", runNetexec},
	"chain":   {"serve one service of a bookinfo-like app: name, version, pod, and its upstreams' answers", runChain},
	"version": {"print the build version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		_, err := fmt.Fprintln(stdout, "nodemesh-testapp", Version)
		return err
	}},
}

// usageError is a wrong command line: exit code 2.
type usageError struct{ error }

// Main runs the command line args (without the program name) until ctx
// ends or a server fails, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "nodemesh-testapp: unknown command %q (see 'nodemesh-testapp --help')\n", args[0])
		return exitUsage
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "nodemesh-testapp %s: %v (see 'nodemesh-testapp %s --help')\n", args[0], err, args[0])
		return exitUsage
	default:
		fmt.Fprintf(stderr, "nodemesh-testapp %s: %v\n", args[0], err)
		return exitError
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "nodemesh-testapp: the test application of nodemesh's check and migration tests.")
	fmt.Fprintln(w, "\nUsage: nodemesh-testapp COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].short)
	}
}

// parse parses a subcommand's flags; errors other than --help are usage
// errors.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}

// SignalContext ends on SIGTERM or SIGINT: the kubelet stops a container
// with SIGTERM, and a test app must not wait out the grace period.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// serveHTTP serves h on addr until ctx ends, then shuts down.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// hostname is the pod's name in Kubernetes.
func hostname() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("read the host name: %w", err)
	}
	return h, nil
}
