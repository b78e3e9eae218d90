package tlsmitm

import (
	"sync"
	"time"
)

// logLimiter lets at most max lines per window through, so a failing
// upstream or a scanning container cannot flood the daemon's log; the next
// line that gets through reports how many were suppressed. The audit log is
// never rate-limited.
type logLimiter struct {
	mu         sync.Mutex
	max        int
	window     time.Duration
	start      time.Time
	n          int
	suppressed int
}

func newLogLimiter(max int, window time.Duration) *logLimiter {
	return &logLimiter{max: max, window: window}
}

// allow reports whether a line may be logged now, and how many lines were
// suppressed since the last one that was.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.window {
		l.start, l.n = now, 0
	}
	if l.n >= l.max {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
