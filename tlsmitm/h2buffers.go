package tlsmitm

import (
	"bufio"
	"sync"
)

// An h2 connection's read and write buffers come from pools and go back as
// soon as they are empty (h2FrameSource, h2Writer.flushLocked): a
// connection waiting for its next frame holds neither. An idle h2
// connection cost 55 KiB with its own buffers, 32 KiB without
// (TestIdleConnMemory).
var (
	h2ReadBuffers  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h2ReadBuffer) }}
	h2WriteBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h2WriteBuffer) }}
)

// connReader reads the client connection and records its error, so the
// read loop can tell a connection that failed from a frame that did.
type connReader struct{ c *h2Conn }

func (r connReader) Read(p []byte) (int, error) {
	n, err := r.c.tc.Read(p)
	if err != nil {
		r.c.connErr = err
	}
	return n, err
}

// h2FrameSource is what the Framer reads: the connection's read buffer,
// taken from its pool when a frame needs it. Once the buffer is empty, a
// frame header or a control frame's few bytes are read straight from the
// connection (crypto/tls holds the rest of the record) and the buffer goes
// back: a connection waiting for its next frame holds none.
type h2FrameSource struct{ c *h2Conn }

func (s h2FrameSource) Read(p []byte) (int, error) {
	c := s.c
	if c.hasFirst && len(p) > 0 {
		p[0], c.hasFirst = c.first[0], false
		return 1, nil
	}
	if len(p) <= h2FrameHeaderLen && (c.br == nil || c.br.Buffered() == 0) {
		c.releaseReadBuffer()
		return connReader{c}.Read(p)
	}
	if c.br == nil {
		c.br = h2ReadBuffers.Get().(*bufio.Reader)
		c.br.Reset(connReader{c})
		c.s.stats.h2Buffers.Add(1)
	}
	return c.br.Read(p)
}

const h2FrameHeaderLen = 9

// releaseReadBuffer gives an emptied read buffer back (read loop only).
func (c *h2Conn) releaseReadBuffer() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(pooledBuffer{})
		h2ReadBuffers.Put(c.br)
		c.br = nil
		c.s.stats.h2Buffers.Add(-1)
	}
}

// Write is the Framer's sink: frames go into the buffer, taken from its
// pool for them. Callers hold mu.
func (w *h2Writer) Write(p []byte) (int, error) { return w.buffer().Write(p) }

func (w *h2Writer) buffer() *bufio.Writer {
	if w.bw == nil {
		w.bw = h2WriteBuffers.Get().(*bufio.Writer)
		w.bw.Reset(&w.out)
		w.held.Add(1)
	}
	return w.bw
}

// release gives the buffer back at the connection's end, dropping what it
// still holds.
func (w *h2Writer) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unflushed = false
	w.releaseLocked()
}

// releaseLocked gives the buffer back; what it held is sent or dropped.
func (w *h2Writer) releaseLocked() {
	if w.bw != nil {
		w.bw.Reset(pooledBuffer{})
		h2WriteBuffers.Put(w.bw)
		w.bw = nil
		w.held.Add(-1)
	}
}
