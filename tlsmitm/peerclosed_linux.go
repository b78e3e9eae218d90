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
	closed := false
	found, err := onSocket(c, func(rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
				closed = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
			}
		})
	})
	return found && (closed || err != nil)
}

// onSocket unwraps c (replayConn, tls.Conn) to its socket and calls use
// with it. found is false when there is none (a pipe in tests); err is
// the error reaching the socket, or use's.
func onSocket(c net.Conn, use func(syscall.RawConn) error) (found bool, err error) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true, err
	}
	return true, use(rc)
}
