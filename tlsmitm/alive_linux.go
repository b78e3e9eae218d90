package tlsmitm

import (
	"net"
	"syscall"
)

// aliveCheck returns a check of whether an idle pooled connection can
// still carry a request, set up once per connection so that each check
// costs one recv(2) and no allocation; nil when c has no socket (a pipe in
// tests: nothing to check). The check peeks at the socket without blocking
// or consuming: an idle HTTP/1.1 connection has nothing to read (the
// session tickets that follow the handshake were consumed with the first
// response), so any pending byte (a close_notify alert, most likely), a FIN
// or an error means the peer is done with it.
func aliveCheck(c net.Conn) func() bool {
	raw, found, err := socketOf(c)
	switch {
	case !found:
		return nil
	case err != nil:
		return func() bool { return false }
	}
	var alive bool
	var b [1]byte
	peek := func(fd uintptr) bool {
		alive = peekByte(fd, &b) == syscall.EAGAIN // anything else: pending bytes, a FIN, a reset
		return true                                // never wait for readiness
	}
	return func() bool {
		alive = false
		return raw.Read(peek) == nil && alive
	}
}

// readableWait returns a wait until c's socket has a byte to read, its
// end, an error or its read deadline, which reads nothing (park); nil when
// c has no socket (a pipe in tests).
func readableWait(c net.Conn) func() {
	raw, found, err := socketOf(c)
	if !found || err != nil {
		return nil
	}
	return func() {
		var b [1]byte
		raw.Read(func(fd uintptr) bool {
			return peekByte(fd, &b) != syscall.EAGAIN // a byte, the end or an error: the serving goroutine reads it
		})
	}
}

// socketOf returns the RawConn of c's socket (onSocket).
func socketOf(c net.Conn) (raw syscall.RawConn, found bool, err error) {
	found, err = onSocket(c, func(rc syscall.RawConn) error { raw = rc; return nil })
	return raw, found, err
}
