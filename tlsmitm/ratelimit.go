package tlsmitm

import (
	"sync"
	"time"
)

// windowLimiter lets at most max events per window through and counts the
// ones it refused. It caps on-demand leaf issuance (certManager); log lines
// are rate-limited by the caller's Config.EventLogger.
type windowLimiter struct {
	mu         sync.Mutex
	max        int
	window     time.Duration
	start      time.Time
	n          int
	suppressed int
}

func newWindowLimiter(max int, window time.Duration) *windowLimiter {
	return &windowLimiter{max: max, window: window}
}

// allow reports whether an event may go through now, and how many were
// suppressed since the last one that did.
func (l *windowLimiter) allow(now time.Time) (ok bool, suppressed int) {
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
