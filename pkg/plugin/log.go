package plugin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// newLogger writes to the configuration's logFile (appending, like Multus)
// or to fallback, at logLevel. Stdout is never used: it carries the result.
func newLogger(n *config.Network, fallback io.Writer) (*slog.Logger, func()) {
	out, done := fallback, func() {}
	if n.Conf.LogFile != "" {
		// O_NOFOLLOW: the node policy checked where the path leads; a
		// symbolic link put there since must not lead elsewhere.
		f, err := os.OpenFile(n.Conf.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
		if err == nil {
			out, done = f, func() { _ = f.Close() }
		} else {
			fmt.Fprintf(fallback, "multi-bridge: cannot open logFile %q: %v; logging to stderr\n", n.Conf.LogFile, err)
		}
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level(n.Conf.LogLevel)})), done
}

// level maps Multus's level names onto slog's. Without logLevel only errors
// are logged, so a quiet plugin stays quiet in the runtime's logs.
func level(name string) slog.Level {
	switch strings.ToLower(name) {
	case "debug":
		return slog.LevelDebug
	case "verbose", "info":
		return slog.LevelInfo
	default:
		return slog.LevelError
	}
}

// withDetails adds a note to an error's details, keeping its CNI code.
func withDetails(err error, note string) error {
	var e *types.Error
	if errors.As(err, &e) {
		c := *e
		if c.Details != "" {
			c.Details += "; "
		}
		c.Details += note
		return &c
	}
	return types.NewError(types.ErrInternal, err.Error(), note)
}
