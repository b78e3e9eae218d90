package dnsredir

import "time"

// SetClock replaces the resolver's clock, so cache expiry is tested by
// moving time rather than waiting for it.
func SetClock(r *UpstreamResolver, now func() time.Time) { r.now = now }
