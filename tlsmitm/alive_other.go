//go:build !linux

package tlsmitm

import "net"

// readableWait has no socket wait here: idle connections do not park.
func readableWait(net.Conn) func() { return nil }

// aliveCheck cannot peek without blocking here; a stale connection fails its
// request like any upstream failure.
func aliveCheck(net.Conn) func() bool { return nil }
