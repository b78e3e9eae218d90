//go:build !linux

package tlsmitm

import "net"

// connAlive cannot peek without blocking here; a stale connection fails its
// request like any upstream failure.
func connAlive(net.Conn) bool { return true }
