//go:build linux && !386

package tlsmitm

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Socket reads and writes without the runtime's system call bookkeeping.
// os and net make every read(2) and write(2) a blocking system call to the
// scheduler: the goroutine's P is marked as in a system call, and sysmon,
// which wakes every 20 µs while any P is, hands that P to another thread
// when the call lasts a tick. On loopback a write(2) runs the receiver's
// TCP input too, so under keep-alive load the relay's writes were caught
// again and again: sysmon's wake-ups, the thread handoffs and the futex
// calls behind them were about a tenth of the proxy's CPU, work nginx's
// event loop does not do. socketIO issues them as raw system calls inside
// RawConn.Read and RawConn.Write, which keep the poller's readiness waits
// and the connection's deadlines exactly as net does. They are recvfrom(2)
// and sendto(2) with MSG_DONTWAIT, which never sleep in the kernel, even on
// a socket something made blocking (a holder of its *os.File): a call that
// slept there could not be stopped for a GC, and every stop-the-world would
// wait for one silent client. (linux/386 has no numbers for them in
// package syscall: it reads and writes through net.)

// socketIO reads and writes one TCP socket. Reads are serialised by its
// user (crypto/tls), writes by the corkedWriter's mutex; each side has its
// own call state, set up once so that a call allocates nothing.
type socketIO struct {
	conn net.Conn // for errors' addresses
	rc   syscall.RawConn

	rp     []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	wp      []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool
}

// newSocketIO returns raw I/O for c when c is a TCP connection (or the
// per-source slot around one, which adds nothing to reads and writes), or
// nil: anything else is read and written through its own methods.
func newSocketIO(c net.Conn) *socketIO {
	if sc, ok := c.(*sourceConn); ok {
		c = sc.Conn
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	s := &socketIO{conn: tcp, rc: rc}
	s.readFn = s.readOnce
	s.writeFn = s.writeAll
	return s
}

func (s *socketIO) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(s.rp))), uintptr(len(s.rp)),
			syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits for readiness, under the deadline
		case 0:
			s.rn = int(n)
		}
		s.rerr = e
		return true
	}
}

func (s *socketIO) writeAll(fd uintptr) bool {
	for s.wn < len(s.wp) {
		p := s.wp[s.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
			syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			if n == 0 {
				e = syscall.EIO // never for a socket; net gives io.ErrUnexpectedEOF
				break
			}
			s.wn += int(n)
			continue
		}
		s.werr = e
		return true
	}
	return true
}

// Read is net.Conn's Read: io.EOF at the end, the deadline's and a closed
// connection's errors as net gives them.
func (s *socketIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, 0
	err := s.rc.Read(s.readFn)
	n, e := s.rn, s.rerr
	s.rp = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case e != 0:
		return 0, s.opError("read", os.NewSyscallError("read", e))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write is net.Conn's Write: all of p, or an error.
func (s *socketIO) Write(p []byte) (int, error) {
	s.wp, s.wn, s.werr = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n, e := s.wn, s.werr
	s.wp = nil
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case e != 0:
		return n, s.opError("write", os.NewSyscallError("write", e))
	}
	return n, nil
}

// opError gives err the form net's own Read and Write give it.
func (s *socketIO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) { // RawConn's "raw-read": a deadline, a closed connection
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: err}
}
