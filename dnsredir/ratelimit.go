package dnsredir

import (
	"net/netip"
	"sync"
	"time"
)

// bucket is a token bucket: it holds up to burst tokens and refills at rate
// tokens per second. The zero value is empty; callers start it full.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket for the time elapsed since the last call and takes
// one token if there is one.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(burst, b.tokens+elapsed*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket would be full at now, that is whether it
// holds no state a fresh bucket would not.
func (b *bucket) full(now time.Time, rate, burst float64) bool {
	return b.tokens+now.Sub(b.last).Seconds()*rate >= burst
}

// clientLimiter is a per-source-address token bucket with a bounded number of
// tracked addresses, so a flood from spoofed sources cannot grow it without
// limit. When the table is full, idle entries (whose bucket has refilled, so
// forgetting them changes nothing) are swept; if it is still full, unknown
// addresses share one overflow bucket, which a spoofed flood exhausts for
// itself without granting fresh bursts.
type clientLimiter struct {
	rate, burst float64
	maxEntries  int

	mu        sync.Mutex
	clients   map[netip.Addr]*bucket
	overflow  bucket
	lastSweep time.Time
}

func newClientLimiter(rate float64, burst, maxEntries int) *clientLimiter {
	return &clientLimiter{
		rate:       rate,
		burst:      float64(burst),
		maxEntries: maxEntries,
		clients:    make(map[netip.Addr]*bucket),
		overflow:   bucket{tokens: float64(burst)},
	}
}

// allow reports whether a query from addr at now is within its rate.
func (l *clientLimiter) allow(addr netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.clients[addr]; ok {
		return b.take(now, l.rate, l.burst)
	}
	if len(l.clients) >= l.maxEntries {
		l.sweep(now)
	}
	if len(l.clients) >= l.maxEntries {
		return l.overflow.take(now, l.rate, l.burst)
	}
	b := &bucket{tokens: l.burst, last: now}
	l.clients[addr] = b
	return b.take(now, l.rate, l.burst)
}

// sweep forgets entries whose bucket is full again. It runs at most once a
// second so a full table of busy clients does not cost a scan per query.
func (l *clientLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = now
	for addr, b := range l.clients {
		if b.full(now, l.rate, l.burst) {
			delete(l.clients, addr)
		}
	}
}

// size returns the number of tracked addresses.
func (l *clientLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}
