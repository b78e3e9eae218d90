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
type clientWatch struct {
	mu     sync.Mutex
	timer  *time.Timer
	done   bool
	gone   bool
	client net.Conn
	uc     *upstreamConn
}

func (x *h1Exchange) watchClient() *clientWatch {
	w := &clientWatch{client: x.tc.NetConn(), uc: x.uc}
	w.timer = time.AfterFunc(clientWatchInterval, w.check)
	return w
}

func (w *clientWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if peerClosed(w.client) {
		w.gone = true
		w.uc.Close()
		return
	}
	w.timer.Reset(clientWatchInterval)
}

// stop ends the watch (idempotent) and reports whether it found the client
// gone.
func (w *clientWatch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.done = true
		w.timer.Stop()
	}
	return w.gone
}
