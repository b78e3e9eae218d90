package tlsmitm

import "time"

// slidingDeadline decides when an idle deadline (the client write deadline
// of a response, the read deadline of a request body) is pushed forward:
// at most every idle/64. Each push is a timer update on the connection, so
// a busy stream pays one per idle/64, and a stuck operation is cut between
// 63/64 of idle and idle after its last progress. Not safe for concurrent
// use: each has one owner (countingBody, read by the transport while the
// handler may end, keeps an atomic form of the same rule).
type slidingDeadline struct {
	idle time.Duration
	last time.Time // when the deadline was last pushed
}

// due reports whether the deadline should now move to the returned time,
// and records that it did.
func (d *slidingDeadline) due() (time.Time, bool) {
	now := time.Now()
	if !d.last.IsZero() && now.Sub(d.last) < d.idle/64 {
		return time.Time{}, false
	}
	d.last = now
	return now.Add(d.idle), true
}
