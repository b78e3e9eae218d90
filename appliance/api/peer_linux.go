package api

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// PeerOf asks the kernel who holds the other end of the Unix socket
// connection c (SO_PEERCRED): the daemon learns its callers from it, the CLI
// the daemon it talks to.
func PeerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("reading SO_PEERCRED: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("reading SO_PEERCRED: %w", err)
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("reading SO_PEERCRED: %w", credErr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
