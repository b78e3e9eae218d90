package dnsredir

import (
	"sync"
	"time"
)

// throttle admits at most rate events per second (with a burst) and counts
// the ones it turns away, so the audit of refused floods stays bounded (log
// lines are rate-limited by the caller's EventLogger). The count of
// suppressed events is handed to the next event that is admitted.
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
