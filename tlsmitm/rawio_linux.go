package tlsmitm

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket reads and writes without the runtime's system call bookkeeping.
// os and net make every read(2) and write(2) a blocking system call to the
// scheduler: the goroutine's P is marked as in a system call, and sysmon,
// which wakes every 20 µs while any P is, hands that P to another thread
// when the call lasts a tick. On loopback a write(2) runs the receiver's
// TCP input too, so under keep-alive load the relay's writes were caught
// again and again: sysmon's wake-ups, the thread handoffs and the futex
// calls behind them were 10–15 % of the proxy's CPU, work nginx's event
// loop does not do. A socket is non-blocking, so its read(2) and write(2)
// never sleep in the kernel: socketIO issues them as raw system calls
// inside RawConn.Read and RawConn.Write, which keep the poller's readiness
// waits and the connection's deadlines exactly as net does.

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
	if err != nil || !nonBlocking(rc) {
		return nil
	}
	s := &socketIO{conn: tcp, rc: rc}
	s.readFn = s.readOnce
	s.writeFn = s.writeAll
	return s
}

func (s *socketIO) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(s.rp))), uintptr(len(s.rp)))
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
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
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

// nonBlocking reports whether rc's socket is in non-blocking mode, which
// raw I/O depends on: on a blocking socket a raw read(2) would sleep in the
// kernel where the runtime cannot stop its goroutine, and every GC's
// stop-the-world would wait for it (the whole daemon frozen behind one
// silent client). net's sockets are non-blocking, but a holder of the
// connection's *os.File (File, then Fd) makes it blocking: such a socket
// is read and written through net, which waits in a system call the
// runtime accounts for.
func nonBlocking(rc syscall.RawConn) bool {
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
		return false
	}
	return flags&unix.O_NONBLOCK != 0
}
