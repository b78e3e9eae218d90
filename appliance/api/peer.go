package api

import "context"

// Peer is the process on the other end of the daemon's Unix socket, as the
// kernel reports it (SO_PEERCRED): it cannot be forged by the client.
type Peer struct {
	UID, GID uint32
	PID      int32
}

type peerKey struct{}

// WithPeer returns ctx carrying p; the daemon's socket server sets it on
// every connection.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer of the request ctx belongs to; ok is false when
// the request did not come over a Unix socket (tests, in-process calls).
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}
