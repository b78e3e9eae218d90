package tlsmitm

import (
	"net"
	"net/http"
	"sync"
)

// Fewer system calls for bulk response bodies. crypto/tls reads its socket
// about one record at a time and writes every record with its own
// write(2): relaying a 100 MB download took two system calls per 16 KiB,
// over half the relay's CPU. Under the upstream's TLS, readAheadConn reads
// the socket in batchSize gulps, several records at once. Under the
// client's TLS, replayConn can be corked while a response body is copied:
// its records collect and leave in one write(2). The cork is flushed before
// every read(2) on the upstream (readAheadConn.onBlock), so nothing waits
// in it while the relay waits for the upstream: an event stream's event
// leaves as soon as it came, as before. Both take their buffers only for a
// body that may be large (bulkBody), and hold them only while they hold
// bytes.

// batchSize is a read-ahead buffer and a cork: four full TLS records.
const batchSize = 64 << 10

// batchBuffers are held only while they hold bytes: an idle connection has
// none.
var batchBuffers = sync.Pool{New: func() any { b := make([]byte, batchSize); return &b }}

// readAheadConn is an upstream socket under its TLS client.
type readAheadConn struct {
	net.Conn
	buf  *[]byte // pooled; held only while it has unread bytes
	r, w int     // unread bytes are (*buf)[r:w]
	err  error   // the socket's error, returned once the bytes before it are read

	// onBlock is flushed before each read(2), which may block; the relay
	// sets it while it copies a response body (crypto/tls serialises
	// reads, and the relay reads from the goroutine that sets it).
	onBlock flusher
}

// bulkBody reports whether a response body may be large enough to batch:
// a small one goes out with its head in one write anyway, and taking
// batch buffers for every small response would only churn the pool.
func bulkBody(resp *http.Response) bool {
	return resp.ContentLength < 0 || resp.ContentLength >= batchSize
}

func (c *readAheadConn) Read(p []byte) (int, error) {
	if c.onBlock == nil && c.buf == nil {
		return c.Conn.Read(p) // a head, a small body: read as crypto/tls asks
	}
	if c.r == c.w {
		if err := c.err; err != nil {
			c.err = nil
			return 0, err
		}
		if c.onBlock != nil {
			c.onBlock.Flush() // an error shows in the next write to the client
		}
		if len(p) >= batchSize {
			return c.Conn.Read(p)
		}
		if c.buf == nil {
			c.buf = batchBuffers.Get().(*[]byte)
		}
		n, err := c.Conn.Read(*c.buf)
		if n <= 0 {
			c.release()
			return 0, err
		}
		c.r, c.w, c.err = 0, n, err
	}
	n := copy(p, (*c.buf)[c.r:c.w])
	c.r += n
	if c.r == c.w {
		c.release()
	}
	return n, nil
}

func (c *readAheadConn) release() {
	if c.buf != nil {
		batchBuffers.Put(c.buf)
		c.buf = nil
	}
	c.r, c.w = 0, 0
}

// NetConn returns the socket (abort, connAlive).
func (c *readAheadConn) NetConn() net.Conn { return c.Conn }

// readAheadOf returns the read-ahead layer under an upstream connection,
// or nil (a test's dialer).
func readAheadOf(c net.Conn) *readAheadConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		ra, _ := nc.NetConn().(*readAheadConn)
		return ra
	}
	return nil
}

// corkedWriter is replayConn's write side: straight to the socket, or,
// while corked, into a buffer that Flush sends in one write(2). The mutex
// orders the relay's flushes with records crypto/tls writes from its
// reading goroutine (an alert, a key update).
type corkedWriter struct {
	mu  sync.Mutex
	buf *[]byte // pooled, while corked
	n   int     // bytes waiting in buf
	err error   // a failed flush: every later write fails with it
}

// write sends p on conn, or adds it to the cork.
func (w *corkedWriter) write(conn net.Conn, p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.buf == nil {
		return conn.Write(p)
	}
	if w.n+len(p) > len(*w.buf) {
		if err := w.flushLocked(conn); err != nil {
			return 0, err
		}
		if len(p) > len(*w.buf) {
			n, err := conn.Write(p)
			w.err = err
			return n, err
		}
	}
	w.n += copy((*w.buf)[w.n:], p)
	return len(p), nil
}

func (w *corkedWriter) flushLocked(conn net.Conn) error {
	if w.err != nil || w.n == 0 {
		return w.err
	}
	_, w.err = conn.Write((*w.buf)[:w.n])
	w.n = 0
	return w.err
}

func (c *replayConn) Write(p []byte) (int, error) { return c.w.write(c.Conn, p) }

// cork collects the writes from now until uncork.
func (c *replayConn) cork() {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.w.buf == nil {
		c.w.buf = batchBuffers.Get().(*[]byte)
	}
}

// Flush sends what the cork holds.
func (c *replayConn) Flush() error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.flushLocked(c.Conn)
}

// uncork sends what the cork holds and writes straight through again.
func (c *replayConn) uncork() error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.w.buf == nil {
		return c.w.err
	}
	err := c.w.flushLocked(c.Conn)
	batchBuffers.Put(c.w.buf)
	c.w.buf, c.w.n = nil, 0
	return err
}
