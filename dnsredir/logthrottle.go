package dnsredir

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// throttle admits at most rate events per second (with a burst) and counts
// the ones it turns away, so per-query logging and per-query audit of floods
// stay bounded. The count of suppressed events is handed to the next event
// that is admitted.
type throttle struct {
	rate, burst float64
	now         func() time.Time

	mu         sync.Mutex
	b          bucket
	suppressed uint64
}

func newThrottle(rate float64, burst int, now func() time.Time) *throttle {
	return &throttle{rate: rate, burst: float64(burst), now: now, b: bucket{tokens: float64(burst), last: now()}}
}

// admit reports whether an event may be emitted now and, if so, how many
// events were suppressed since the last admitted one.
func (t *throttle) admit() (ok bool, suppressed uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.b.take(t.now(), t.rate, t.burst) {
		t.suppressed++
		return false, 0
	}
	suppressed, t.suppressed = t.suppressed, 0
	return true, suppressed
}

// throttledLogger writes per-query log lines through a throttle.
type throttledLogger struct {
	logger *slog.Logger
	t      *throttle
}

// log emits msg at level unless the throttle is exhausted; a line that
// follows suppressed lines carries their count.
func (l *throttledLogger) log(level slog.Level, msg string, attrs ...slog.Attr) {
	if !l.logger.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := l.t.admit()
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Uint64("suppressed_lines", suppressed))
	}
	l.logger.LogAttrs(context.Background(), level, msg, attrs...)
}
