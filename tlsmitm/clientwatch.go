package tlsmitm

import (
	"net"
	"sync"
	"time"
)

// clientWatchInterval is how often a relay waiting for an upstream's
// response head checks that its client is still there. A fast answer never
// starts a check; a slow one (a model generating a long reply) is cut
// within this interval of the client hanging up, so the upstream stops
// working, and billing the real credential, for nobody.
const clientWatchInterval = time.Second

// clientWatch closes an exchange's upstream connection when the client
// hangs up while the relay is blocked reading the upstream (nothing reads
// the client then; net/http's server keeps a background read for this).
// There is one per relay connection: its timer is armed for each request
// that waits on an upstream and stopped when the response head arrives, so
// a request costs a timer reset, not a timer.
type clientWatch struct {
	client net.Conn

	mu     sync.Mutex
	timer  *time.Timer   // nil until the first request
	active bool          // between start and stop
	gone   bool          // the client hung up during the current watch
	uc     *upstreamConn // the upstream connection to close then
}

// start watches the client while the exchange waits on uc.
func (w *clientWatch) start(uc *upstreamConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.uc, w.active, w.gone = uc, true, false
	if w.timer == nil {
		w.timer = time.AfterFunc(clientWatchInterval, w.check)
		return
	}
	w.timer.Reset(clientWatchInterval)
}

// check runs on the timer. A late run that finds no watch active does
// nothing.
func (w *clientWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active {
		return
	}
	if peerClosed(w.client) {
		w.gone, w.active = true, false
		w.uc.Close()
		return
	}
	w.timer.Reset(clientWatchInterval)
}

// stop ends the current watch (idempotent) and reports whether it found
// the client gone.
func (w *clientWatch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active {
		w.active = false
		w.timer.Stop()
	}
	w.uc = nil
	return w.gone
}
