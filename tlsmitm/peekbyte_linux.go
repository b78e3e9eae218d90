//go:build linux && !386

package tlsmitm

import (
	"syscall"
	"unsafe"
)

// peekByte peeks at fd's next byte without waiting or consuming it: 0 when
// there is one (or the end), EAGAIN when there is none yet. It is a raw
// system call, as the relay's reads and writes are (rawio_linux.go):
// MSG_DONTWAIT never sleeps.
func peekByte(fd uintptr, b *[1]byte) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e
}
