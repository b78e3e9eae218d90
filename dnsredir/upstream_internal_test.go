package dnsredir

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestUpstreamCache_IsBounded(t *testing.T) {
	r, err := NewUpstreamResolver(UpstreamConfig{Servers: []string{"127.0.0.1:1"}, CacheSize: 3, MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	for i := range 100 {
		r.mu.Lock()
		r.store(fmt.Sprintf("n%d.example", i), a, time.Hour)
		r.mu.Unlock()
	}
	if n := r.cacheLen(); n != 3 {
		t.Errorf("cache holds %d names, want the bound 3", n)
	}
	// MaxTTL caps an hour-long TTL at a minute.
	if _, ok := r.cached("n99.example"); !ok {
		t.Fatal("latest entry missing")
	}
	now = now.Add(61 * time.Second)
	if _, ok := r.cached("n99.example"); ok {
		t.Error("entry outlived MaxTTL")
	}
}
