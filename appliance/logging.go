package appliance

import (
	"io"
	"log/slog"
	"strings"

	"github.com/clauderon/clauderond/appliance/config"
)

// NewLogger builds the daemon's logger from log.level and log.format
// (text|json), writing to w.
func NewLogger(c config.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.ToLower(c.Format) == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
