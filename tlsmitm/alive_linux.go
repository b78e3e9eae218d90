package tlsmitm

import (
	"net"
	"syscall"
)

// connAlive reports whether an idle pooled connection can still carry a
// request. It peeks at the socket without blocking or consuming (one
// recv(2)): an idle HTTP/1.1 connection has nothing to read (the session
// tickets that follow the handshake were consumed with the first
// response), so any pending byte (a close_notify alert, most likely), a FIN
// or an error means the peer is done with it.
func connAlive(c net.Conn) bool {
	alive := true
	found, err := onSocket(c, func(rc syscall.RawConn) error {
		var b [1]byte
		return rc.Read(func(fd uintptr) bool {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			// Anything but "nothing to read": pending bytes, a FIN, a reset.
			alive = err == syscall.EAGAIN
			return true // never wait for readiness
		})
	})
	return !found || err == nil && alive
}

// aliveCheck returns connAlive for c, set up once per connection so that
// a check costs its recv(2) and no allocation; nil when c has no socket.
func aliveCheck(c net.Conn) func() bool {
	var raw syscall.RawConn
	if found, err := onSocket(c, func(rc syscall.RawConn) error { raw = rc; return nil }); !found || err != nil {
		return nil
	}
	var alive bool
	var b [1]byte
	peek := func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = err == syscall.EAGAIN // as in connAlive
		return true
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
	var raw syscall.RawConn
	found, err := onSocket(c, func(rc syscall.RawConn) error { raw = rc; return nil })
	if !found || err != nil {
		return nil
	}
	return func() {
		var b [1]byte
		raw.Read(func(fd uintptr) bool {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return err != syscall.EAGAIN // a byte, the end or an error: the serving goroutine reads it
		})
	}
}
