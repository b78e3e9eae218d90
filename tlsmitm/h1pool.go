package tlsmitm

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"time"
)

// Limits of the HTTP/1.1 upstream pool, per state (a reload starts a new
// pool and closes the old one's idle connections).
const (
	h1MaxIdlePerHost = 64
	h1MaxIdle        = 256 // in all hosts (wildcard rules multiply hosts)
	h1IdleTimeout    = 90 * time.Second
	h1BufSize        = 16 << 10
	// maxResponseHeadBytes bounds an upstream response head (each 1xx
	// included); http.Transport's default is 10 MiB, API heads are < 8 KiB.
	maxResponseHeadBytes = 1 << 20
)

// upstreamConn is a verified TLS connection to an upstream host with its
// buffers, owned by one request at a time.
type upstreamConn struct {
	conn   net.Conn
	lr     *headerLimitReader // under br: bounds response heads
	bc     *batchConn         // under TLS, if there (batchio.go)
	br     *bufio.Reader
	bw     *bufio.Writer
	host   string
	reused bool        // it served an earlier request (a stale one may fail)
	idleAt time.Time   // when it went back to the pool
	alive  func() bool // aliveCheck's, set up once (nil: nothing to check)
}

func (uc *upstreamConn) Close() error {
	if uc.bc != nil && uc.bc.corked() {
		// A request body sender's: the socket goes first, or crypto/tls's
		// close_notify waits (5s) behind a flush of the cork blocked on an
		// upstream that stopped reading. The body is being cut anyway.
		uc.bc.Conn.Close()
	}
	return uc.conn.Close()
}

// abort closes the TCP connection under TLS at once: a read blocked on
// it fails even if the peer answers the close.
func (uc *upstreamConn) abort() {
	if nc, ok := uc.conn.(interface{ NetConn() net.Conn }); ok {
		nc.NetConn().Close()
	}
	uc.conn.Close()
}

// limitHead bounds what the next response head may read; unlimit lifts it
// for the body.
func (uc *upstreamConn) limitHead() { uc.lr.n = maxResponseHeadBytes + int64(uc.br.Buffered()) }
func (uc *upstreamConn) unlimit()   { uc.lr.n = math.MaxInt64 }

// clean reports whether an idle connection may carry a new request: nothing
// unread in its buffers or the TLS layer (an upstream that sent more than
// the response it was asked for would otherwise answer the next client
// with it), and the peer has not closed it.
func (uc *upstreamConn) clean() bool {
	if uc.br.Buffered() > 0 || !uc.tlsHoldsNothing() {
		return false
	}
	return uc.alive == nil || uc.alive()
}

// tlsHoldsNothing reports whether the TLS layer holds no byte to read: a
// read that may not touch the socket returns what it holds (decrypting a
// buffered record), or fails with a temporary error crypto/tls does not
// keep. Under a batchConn that read is a probe (no system call, no
// allocation); otherwise a read deadline in the past.
func (uc *upstreamConn) tlsHoldsNothing() bool {
	if uc.bc != nil {
		uc.bc.probing = true
		_, err := uc.br.Peek(1)
		uc.bc.probing = false
		return errors.Is(err, errNothingBuffered)
	}
	uc.conn.SetReadDeadline(time.Unix(1, 0))
	_, err := uc.br.Peek(1)
	uc.conn.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

// h1Pool keeps idle HTTP/1.1 upstream connections by host. Unlike
// http.Transport it has no goroutine per connection: a connection is
// checked for a peer close (aliveCheck) when taken, not watched while idle.
type h1Pool struct {
	mu     sync.Mutex
	idle   map[string][]*upstreamConn
	count  int // idle connections in all hosts
	closed bool
	sweep  *time.Timer // closes connections idle past h1IdleTimeout
	dial   func(ctx context.Context, host string) (net.Conn, error)
}

func newH1Pool(dial func(ctx context.Context, host string) (net.Conn, error)) *h1Pool {
	return &h1Pool{idle: make(map[string][]*upstreamConn), dial: dial}
}

// get returns an idle connection to host that is still open, or dials one
// (always, with fresh).
func (p *h1Pool) get(ctx context.Context, host string, fresh bool) (*upstreamConn, error) {
	for !fresh {
		uc := p.take(host)
		if uc == nil {
			break
		}
		if time.Since(uc.idleAt) < h1IdleTimeout && uc.clean() {
			return uc, nil
		}
		uc.Close()
	}
	c, err := p.dial(ctx, host)
	if err != nil {
		return nil, err
	}
	lr := &headerLimitReader{r: c, n: math.MaxInt64}
	return &upstreamConn{conn: c, host: host, lr: lr, bc: batchOf(c), alive: aliveCheck(c),
		br: bufio.NewReaderSize(lr, h1BufSize), bw: bufio.NewWriterSize(c, h1BufSize)}, nil
}

// take pops the most recently used idle connection to host.
func (p *h1Pool) take(host string) *upstreamConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[host]
	if len(list) == 0 {
		return nil
	}
	uc := list[len(list)-1]
	list[len(list)-1] = nil
	p.idle[host] = list[:len(list)-1]
	p.count--
	return uc
}

// put returns uc to the pool, or closes it when the pool is closed or full
// or uc holds unread bytes (see clean).
func (p *h1Pool) put(uc *upstreamConn) {
	uc.reused = true
	uc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.host]) >= h1MaxIdlePerHost || p.count >= h1MaxIdle || uc.br.Buffered() > 0 {
		p.mu.Unlock()
		uc.Close()
		return
	}
	p.idle[uc.host] = append(p.idle[uc.host], uc)
	p.count++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(h1IdleTimeout, p.closeExpired)
	}
	p.mu.Unlock()
}

// closeExpired closes connections idle for h1IdleTimeout, and runs again
// while any connection is idle.
func (p *h1Pool) closeExpired() {
	var expired []*upstreamConn
	p.mu.Lock()
	now := time.Now()
	for host, list := range p.idle {
		keep := list[:0]
		for _, uc := range list {
			if now.Sub(uc.idleAt) >= h1IdleTimeout {
				expired = append(expired, uc)
			} else {
				keep = append(keep, uc)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, host)
		} else {
			p.idle[host] = keep
		}
	}
	p.count -= len(expired)
	p.sweep = nil
	if p.count > 0 && !p.closed {
		p.sweep = time.AfterFunc(h1IdleTimeout/2, p.closeExpired)
	}
	p.mu.Unlock()
	for _, uc := range expired {
		uc.Close()
	}
}

// closeIdle closes every idle connection and makes put close from now on.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = make(map[string][]*upstreamConn)
	p.count = 0
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, list := range idle {
		for _, uc := range list {
			uc.Close()
		}
	}
}

// idleCount reports the idle connections (tests).
func (p *h1Pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}
