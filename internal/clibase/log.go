package clibase

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// LogFlags are --log-level and --log-format.
type LogFlags struct {
	Level, Format string
}

// Add registers the flags with their defaults.
func (l *LogFlags) Add(cmd *cobra.Command, level, format string) {
	cmd.Flags().StringVar(&l.Level, "log-level", level, "debug, info, warn or error")
	cmd.Flags().StringVar(&l.Format, "log-format", format, "json or text")
}

// Logger is the logger the flags ask for, writing to w. It also becomes
// client-go's (RouteKlog), so the process logs in one format.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	log, err := NewLogger(w, l.Level, l.Format)
	if err != nil {
		return nil, err
	}
	RouteKlog(log)
	return log, nil
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

// RouteKlog makes log the logger of klog, through which client-go (the
// reflectors and informers, leader election, the event broadcaster, client
// throttling) logs: its messages come out in log's format and are filtered
// by log's level. klog's own verbosity (-v, default 0) still gates its V(n)
// messages first, and klog.Warning arrives as Info (klog's logr bridge has
// no warning level). It is process-wide, as klog is.
func RouteKlog(log *slog.Logger) {
	klog.SetSlogLogger(log)
}
