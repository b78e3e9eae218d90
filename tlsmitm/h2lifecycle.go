package tlsmitm

import (
	"fmt"
	"time"
)

// How an h2 connection runs once its handshake is done: its read loop
// (serve, h2serve.go) until the connection ends, with a park (park.go)
// in between when it idles.

// run serves c's frames until the connection ends, and ends it; or until
// the connection has waited ParkAfter for a frame with no stream open, and
// parks it (park.go): run then goes on, resumed, in the goroutine the wait
// ends in.
func (c *h2Conn) run(rc *replayConn, resumed bool) {
	switch c.serve(rc, resumed) {
	case h2Parked:
	case h2Graceful:
		c.end(rc, true)
	default:
		c.end(rc, false)
	}
}

// end closes the connection once its read loop is over: gracefully (its
// streams end, close_notify) or not.
func (c *h2Conn) end(rc *replayConn, graceful bool) {
	defer c.s.stats.activeHTTP.Add(-1)
	defer c.s.registerH2(c, false)
	if !graceful {
		c.w.fail(errH2ConnClosed)
	}
	c.mu.Lock()
	c.goingAway = true
	c.mu.Unlock()
	for _, st := range c.openStreams() {
		st.abort(fmt.Errorf("%w: the connection ended", errClientClosed))
	}
	c.wg.Wait()
	rc.onRead = nil // closeH1 reads away what the client still sends
	c.w.release()   // frames a graceful end left unsent are dropped, as ever
	if c.br != nil {
		c.br.Discard(c.br.Buffered()) // so are frames never read
	}
	c.releaseReadBuffer()
	if graceful {
		closeH1(c.tc) // close_notify, FIN, and what the client still sends read away
	} else {
		c.tc.NetConn().Close()
	}
}

// How a read loop ended.
type h2Outcome int

const (
	h2Failed   h2Outcome = iota
	h2Graceful           // idle, or gone away with no stream left
	h2Parked             // the connection parked: the loop goes on elsewhere
)

func graceOf(graceful bool) h2Outcome {
	if graceful {
		return h2Graceful
	}
	return h2Failed
}

// awaitFrame reads the next frame's first byte when nothing is buffered,
// so that the loop waits for frames here, at a frame boundary. Once the
// connection has no stream (idleArmed, now or while it waits), the wait
// lasts ParkAfter at most, then the connection parks: awaitFrame reports
// true then. Otherwise the loop reads on, that byte first, under the read
// deadline the connection had (the idle one, or now once it is going away).
func (c *h2Conn) awaitFrame(rc *replayConn) bool {
	if c.hasFirst || c.br != nil && c.br.Buffered() > 0 {
		return false
	}
	c.releaseReadBuffer() // empty: a connection waiting for a frame holds none
	c.mu.Lock()
	c.awaiting = true
	if c.idleArmed && !c.goingAway {
		wait, _ := c.s.parkDeadline(time.Now(), c.idleUntil)
		c.tc.SetReadDeadline(wait)
	}
	c.mu.Unlock()
	n, err := c.tc.Read(c.first[:]) // not connReader: a timeout here is not the connection's
	c.hasFirst = n == 1
	c.mu.Lock()
	defer c.mu.Unlock()
	c.awaiting = false
	if !c.idleArmed {
		return false // streams are open: no deadline was set
	}
	if c.goingAway {
		c.tc.SetReadDeadline(time.Unix(1, 0))
		return false
	}
	c.tc.SetReadDeadline(c.idleUntil)
	return n == 0 && isTimeout(err) && time.Now().Before(c.idleUntil) && c.s.park(rc, func() { c.run(rc, true) })
}
