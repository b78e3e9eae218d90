//go:build !linux

package tlsmitm

import "net"

// connAlive cannot peek without blocking here; a stale connection fails its
// request like any upstream failure.
func connAlive(net.Conn) bool { return true }

// readableWait has no socket wait here: idle connections do not park.
func readableWait(net.Conn) func() { return nil }

// aliveCheck has nothing to set up here: connAlive answers.
func aliveCheck(net.Conn) func() bool { return nil }
