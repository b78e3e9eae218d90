package tlsmitm

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Fewer system calls for bulk bodies. crypto/tls reads its socket about one
// record at a time and writes every record with its own write(2): relaying
// a 100 MB download took two system calls per 16 KiB, over half the
// relay's CPU. batchConn sits under the TLS of both legs (the upstream's
// directly, the client's inside replayConn). While the relay copies a body
// that may be large, the side it reads takes the socket in batchSize
// gulps, several records per read(2), and the side it writes is corked:
// the records collect and leave in one write(2). The cork is flushed
// before every read(2) on the other side, which may block (onBlock), so
// nothing waits in it while the relay waits for more: an event stream's
// event leaves as soon as it came, as before. Both buffers come from a
// pool for bulk bodies only (a small one goes out with its head in one
// write anyway) and are held only while they hold bytes.

// batchSize is a read-ahead buffer and a cork: four full TLS records.
const batchSize = 64 << 10

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, batchSize); return &b }}

// mayBeLarge reports whether a body of this Content-Length may be large
// enough to batch: unknown, or at least a batch. (A HEAD's, 204's or 304's
// Content-Length describes a body that is not there: http.ReadResponse
// gives those http.NoBody.)
func mayBeLarge(contentLength int64) bool {
	return contentLength < 0 || contentLength >= batchSize
}

// isEventStream reports whether a response is a server-sent event stream.
func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// batchConn is a socket under TLS: reads straight through, or through a
// read-ahead buffer while onBlock is set; writes straight through, or into
// the cork.
type batchConn struct {
	net.Conn

	// The read side; crypto/tls serialises reads, and the relay sets
	// onBlock from the goroutine that reads.
	buf     *[]byte // read-ahead, pooled; held only while it has unread bytes
	r, w    int     // unread bytes are (*buf)[r:w]
	err     error   // the socket's error, returned once the bytes before it are read
	onBlock flusher // flushed before each read(2): the other leg's cork
	probing bool    // reads return what is buffered here, or errNothingBuffered: never read(2)

	cork corkedWriter // the write side
	raw  *socketIO    // the socket's reads and writes, as raw system calls (rawio_linux.go); nil: through Conn
}

// newBatchConn returns c under a batchConn.
func newBatchConn(c net.Conn) batchConn { return batchConn{Conn: c, raw: newSocketIO(c)} }

// socket is what reads and writes the socket.
func (c *batchConn) socket() io.ReadWriter {
	if c.raw != nil {
		return c.raw
	}
	return c.Conn
}

// batchOf returns the batchConn under an upstream connection's TLS, or nil
// (a test's dialer).
func batchOf(c net.Conn) *batchConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		bc, _ := nc.NetConn().(*batchConn)
		return bc
	}
	return nil
}

// NetConn returns the socket (abort, aliveCheck, peerClosed).
func (c *batchConn) NetConn() net.Conn { return c.Conn }

func (c *batchConn) Read(p []byte) (int, error) {
	if c.probing && c.r == c.w && c.err == nil {
		return 0, errNothingBuffered
	}
	if c.onBlock == nil && c.buf == nil {
		return c.socket().Read(p) // a head, a small body: read as crypto/tls asks
	}
	if c.r == c.w {
		if err := c.err; err != nil {
			c.err = nil
			return 0, err
		}
		if c.onBlock != nil {
			c.onBlock.Flush() // an error shows in the next write on that leg
		}
		if len(p) >= batchSize {
			return c.socket().Read(p)
		}
		if c.buf == nil {
			c.buf = batchBuffers.Get().(*[]byte)
		}
		n, err := c.socket().Read(*c.buf)
		if n <= 0 {
			c.releaseReadAhead()
			return 0, err
		}
		c.r, c.w, c.err = 0, n, err
	}
	n := copy(p, (*c.buf)[c.r:c.w])
	c.r += n
	if c.r == c.w {
		c.releaseReadAhead()
	}
	return n, nil
}

// errNothingBuffered is a probing read's: nothing is buffered above the
// socket. It is temporary, so crypto/tls does not keep it.
var errNothingBuffered error = nothingBuffered{}

type nothingBuffered struct{}

func (nothingBuffered) Error() string   { return "tlsmitm: nothing buffered" }
func (nothingBuffered) Timeout() bool   { return true }
func (nothingBuffered) Temporary() bool { return true }

func (c *batchConn) releaseReadAhead() {
	if c.buf != nil {
		batchBuffers.Put(c.buf)
		c.buf = nil
	}
	c.r, c.w = 0, 0
}

func (c *batchConn) Write(p []byte) (int, error) { return c.cork.write(c.socket(), p) }

// corkWrites collects the writes from now until uncork.
func (c *batchConn) corkWrites() { c.cork.start() }

// Flush sends what the cork holds.
func (c *batchConn) Flush() error { return c.cork.flush(c.socket()) }

// uncork sends what the cork holds and writes straight through again.
func (c *batchConn) uncork() error { return c.cork.stop(c.socket()) }

// corked reports, without waiting for a flush in progress, whether writes
// are corked.
func (c *batchConn) corked() bool { return c.cork.on.Load() }

// corkedWriter is a batchConn's write side. Its mutex orders the relay's
// flushes with the records crypto/tls writes from a reading goroutine (an
// alert, a key update).
type corkedWriter struct {
	mu  sync.Mutex
	buf *[]byte     // pooled, while corked
	n   int         // bytes waiting in buf
	err error       // a failed write of the cork's: every later write fails with it
	on  atomic.Bool // buf != nil, read without mu (upstreamConn.Close)
}

// write sends p on conn, or adds it to the cork.
func (w *corkedWriter) write(conn io.Writer, p []byte) (int, error) {
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

func (w *corkedWriter) flushLocked(conn io.Writer) error {
	if w.err != nil || w.n == 0 {
		return w.err
	}
	_, w.err = conn.Write((*w.buf)[:w.n])
	w.n = 0
	return w.err
}

func (w *corkedWriter) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf == nil {
		w.buf = batchBuffers.Get().(*[]byte)
		w.on.Store(true)
	}
}

func (w *corkedWriter) flush(conn io.Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked(conn)
}

func (w *corkedWriter) stop(conn io.Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf == nil {
		return w.err
	}
	err := w.flushLocked(conn)
	batchBuffers.Put(w.buf)
	w.buf, w.n = nil, 0
	w.on.Store(false)
	return err
}
