package tlsmitm

import "syscall"

// peekByte is peekbyte_linux.go's: linux/386 has no recvfrom(2) number in
// package syscall (its socket calls go through socketcall(2)), so it peeks
// through syscall.Recvfrom.
func peekByte(fd uintptr, b *[1]byte) syscall.Errno {
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}
