//go:build !linux

package tlsmitm

import (
	"io"
	"net"
)

// readableWait has no socket wait here: idle connections do not park.
func readableWait(net.Conn) func() { return nil }

// aliveCheck cannot peek without blocking here; a stale connection fails its
// request like any upstream failure.
func aliveCheck(net.Conn) func() bool { return nil }

// socketIO is rawio_linux.go's; elsewhere sockets are read and written
// through net.
type socketIO struct{ io.ReadWriter }

func newSocketIO(net.Conn) *socketIO { return nil }
