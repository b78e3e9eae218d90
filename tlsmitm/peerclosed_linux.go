package tlsmitm

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the peer of c has hung up (FIN, reset or
// error), without reading: poll(2) with POLLRDHUP sees a FIN even behind
// unread bytes such as a TLS close_notify.
func peerClosed(c net.Conn) bool {
	rc, ok, err := rawConn(c)
	if !ok {
		return false
	}
	if err != nil {
		return true
	}
	closed := false
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			closed = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return closed || err != nil
}

// rawConn unwraps c (replayConn, tls.Conn) to its socket: ok false when
// there is none (a pipe in tests), err when the socket cannot be reached.
func rawConn(c net.Conn) (syscall.RawConn, bool, error) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false, nil
	}
	rc, err := sc.SyscallConn()
	return rc, true, err
}
