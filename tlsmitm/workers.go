package tlsmitm

import (
	"sync"
	"sync/atomic"
	"time"
)

// Goroutines for per-request work, kept for the next request. An h2
// stream and a request body each run on a goroutine of their own. A new
// goroutine starts on a small stack and grows it, copying it each time, as
// the request goes down through the relay, crypto/tls and the socket: in a
// profile of h2 keep-alive load, runtime.morestack and copystack were 11 %
// of the proxy's CPU. A worker that has run one request keeps its grown
// stack and takes the next one, if one comes within workerIdle.

// workerIdle is how long a worker waits for more work before it ends.
// Under load the next request comes within microseconds; an idle server
// keeps no workers.
const workerIdle = 250 * time.Millisecond

// workerPool runs functions on idle workers, or on new goroutines that
// become workers after them.
type workerPool struct {
	work chan func() // unbuffered: a send succeeds only to a waiting worker
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup // every worker

	started atomic.Int64 // workers started (tests)
}

func newWorkerPool() *workerPool {
	return &workerPool{work: make(chan func()), quit: make(chan struct{})}
}

// run runs f on a worker. It never waits: without an idle worker it starts
// one.
func (p *workerPool) run(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	p.wg.Add(1)
	p.started.Add(1)
	go p.worker(f)
}

func (p *workerPool) worker(f func()) {
	defer p.wg.Done()
	var idle *time.Timer
	for {
		f()
		f = nil // what it held is not kept while the worker waits
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case f = <-p.work:
		case <-idle.C:
			return
		case <-p.quit:
			idle.Stop()
			return
		}
	}
}

// stop makes idle workers end now, and every worker once its function
// returns; run still runs what it is given. With wait, it waits for them.
func (p *workerPool) stop(wait bool) {
	p.once.Do(func() { close(p.quit) })
	if wait {
		p.wg.Wait()
	}
}
