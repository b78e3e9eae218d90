package tlsmitm

import (
	"net"
	"time"
)

// Idle connections park. A connection is served by one goroutine, whose
// stack grows to what its requests needed (8 KiB for HTTP/1.1 and h2) and
// keeps that size while the connection waits for its next request: a
// third or more of an idle connection's memory. An agent holds its
// connections open between turns, for seconds to minutes, so most
// connections are idle most of the time. Once a connection has waited
// Config.ParkAfter, its goroutine hands the wait to a new one and ends:
// the new goroutine waits for the client's next byte on a small stack (2
// KiB, or 4 when the runtime sizes new stacks up from the average in use),
// reading nothing, then serves the connection on from where it stopped.
// The read deadline the connection waits under (idle timeout, drain) is
// the same either way, and a connection that gets its next request within
// ParkAfter never parks, so a busy one pays nothing for it.

// park hands an idle connection's wait to a new goroutine, which waits
// until the socket has a byte to read, its end, an error or the read
// deadline the caller set, then calls resume. It reports false, having
// done nothing, when the socket cannot be waited on that way (a pipe in
// tests, another OS); the caller then waits itself.
func (s *Server) park(socket net.Conn, resume func()) bool {
	wait := readableWait(socket)
	if wait == nil {
		return false
	}
	s.stats.parked.Add(1)
	s.conns.Add(1) // the caller's goroutine still counts: Shutdown cannot miss it
	go func() {
		defer s.conns.Done()
		defer s.recoverConn("connection", socket.RemoteAddr())
		wait()
		s.stats.parked.Add(-1)
		resume()
	}()
	return true
}

// parkDeadline is the read deadline of an idle connection's own wait:
// ParkAfter from now, unless its idle deadline comes first. parks is false
// then: the connection ends with the wait, it does not park.
func (s *Server) parkDeadline(now, idleUntil time.Time) (deadline time.Time, parks bool) {
	if d := now.Add(s.cfg.ParkAfter); d.Before(idleUntil) {
		return d, true
	}
	return idleUntil, false
}
