package audit

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the per-source line budget.
const (
	DefaultRatePerSecond = 200
	DefaultBurst         = 2000
	// dropReportEvery is the interval of the summary line a source with
	// dropped lines gets.
	dropReportEvery = time.Second
	// maxSources bounds the limiter's map; sources past it share one
	// bucket.
	maxSources    = 1 << 14
	overflowSouce = "(other sources)"
)

// limiter is a token bucket per source (container ID, else source IP
// without port). Its lock is its own, so a dropped line costs neither an
// encoding nor the file lock.
type limiter struct {
	rate, burst float64

	mu      sync.Mutex
	sources map[string]*bucket
}

type bucket struct {
	tokens     float64
	last       time.Time
	dropped    uint64    // since the last summary
	lastReport time.Time // when the last summary was written (or the first drop)
	who        Record    // container, ID and source IP of the last dropped line
}

func newLimiter(rate float64, burst int) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{rate: rate, burst: float64(max(burst, 1)), sources: map[string]*bucket{}}
}

// sourceOf is the key a record is budgeted under; "" (never limited) for a
// record without a source.
func sourceOf(r *Record) string {
	if r.ContainerID != "" {
		return r.ContainerID
	}
	if ap, err := netip.ParseAddrPort(r.SrcIP); err == nil {
		return ap.Addr().String()
	}
	return r.SrcIP
}

// allow takes a token from r's source, or counts r as dropped.
func (l *limiter) allow(r *Record, now time.Time) bool {
	key := sourceOf(r)
	if key == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[key]
	if b == nil {
		if len(l.sources) >= maxSources {
			key = overflowSouce
			b = l.sources[key]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, last: now}
			l.sources[key] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if b.dropped == 0 && now.Sub(b.lastReport) >= dropReportEvery {
		b.lastReport = now // the first summary comes one interval after the first drop
	}
	b.dropped++
	b.who = Record{Container: r.Container, ContainerID: r.ContainerID, Profile: r.Profile, SrcIP: key}
	if key == overflowSouce {
		b.who = Record{SrcIP: key}
	}
	return false
}

// summaries returns one DecisionAuditDropped record per source whose drops
// were last reported an interval ago (every source with drops when all),
// and forgets sources whose bucket refilled.
func (l *limiter) summaries(now time.Time, all bool) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for key, b := range l.sources {
		if b.dropped > 0 && (all || now.Sub(b.lastReport) >= dropReportEvery) {
			r := b.who
			r.TS, r.Kind, r.Decision, r.Dropped = now, KindLog, DecisionAuditDropped, b.dropped
			r.Error = fmt.Sprintf("%d lines from this source dropped by the audit rate limit", b.dropped)
			out = append(out, r)
			b.dropped, b.lastReport = 0, now
			continue
		}
		if b.dropped == 0 && b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.sources, key)
		}
	}
	return out
}
