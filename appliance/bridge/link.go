package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WaitGateway waits (polling, up to timeout) until the kernel bridge named
// bridge exists and carries gw, and returns the link's index. Docker creates
// the bridge and assigns the gateway during NetworkCreate, but a just-created
// or just-restarted network can lag a little.
func WaitGateway(ctx context.Context, bridge string, gw netip.Addr, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		idx, err := checkGateway(bridge, gw)
		if err == nil {
			return idx, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for bridge %s with address %s: %w; "+
				"check `ip addr show %s` and `docker network inspect`, or run `clauderond teardown`, then start clauderond again",
				bridge, gw, err, bridge)
		case <-t.C:
		}
	}
}

// checkGateway reports whether bridge exists, is a bridge and has gw.
func checkGateway(bridge string, gw netip.Addr) (int, error) {
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		return 0, fmt.Errorf("finding link %s: %w", bridge, err)
	}
	if l.Type() != "bridge" {
		return 0, fmt.Errorf("link %s is a %s, not a bridge", bridge, l.Type())
	}
	addrs, err := consistent(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return 0, fmt.Errorf("listing addresses of %s: %w", bridge, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == gw {
			return l.Attrs().Index, nil
		}
	}
	return 0, fmt.Errorf("link %s does not carry %s yet", bridge, gw)
}

// LinkEvent describes a change to the watched bridge.
type LinkEvent struct {
	Name    string
	Index   int
	Deleted bool
	Up      bool
}

// WatchLink reports every netlink change of the link named bridge (created,
// deleted, flags changed, renamed away) to onChange until ctx is done. It
// returns nil on cancellation and an error if the subscription fails.
func WatchLink(ctx context.Context, bridge string, onChange func(LinkEvent), logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("subscribing to netlink link updates: %w", err)
	}
	watched := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("netlink link subscription: %w", err)
		case u, ok := <-ch:
			if !ok {
				return errors.New("netlink link subscription closed")
			}
			attrs := u.Attrs()
			mine := attrs.Name == bridge || (watched != 0 && attrs.Index == watched)
			if !mine {
				continue
			}
			ev := LinkEvent{Name: attrs.Name, Index: attrs.Index, Deleted: u.Header.Type == unix.RTM_DELLINK,
				Up: attrs.Flags&(1<<0) != 0}
			if ev.Deleted || attrs.Name != bridge {
				watched = 0
			} else {
				watched = attrs.Index
			}
			logger.Debug("bridge link changed", "link", ev.Name, "index", ev.Index, "deleted", ev.Deleted)
			onChange(ev)
		}
	}
}
