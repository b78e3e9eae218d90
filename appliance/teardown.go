package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/docker/docker/client"
)

// Teardown removes, on purpose, what Run leaves behind: the Docker network
// first (Docker refuses while containers are attached, and then the rules stay
// so those containers stay confined), then our nftables tables. Missing
// pieces are not errors, so Teardown can be run twice.
func Teardown(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts ...Option) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "teardown")
	if daemonRunning(ctx, cfg.SocketPath()) {
		return fmt.Errorf("clauderond is running (%s answers); stop it first, or it would recreate the network and the rules", cfg.SocketPath())
	}
	o := options{table: netfilter.DefaultTable}
	for _, f := range opts {
		f(&o)
	}
	if cfg.NodeMode() {
		// The pod bridge is the CNI's: only our rules go. The node's pods
		// then reach the network unconfined, as on any node.
		log.Info("node mode: the CNI's bridge is left alone", "bridge", cfg.Network.Bridge)
	} else if o.docker == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return fmt.Errorf("creating the docker client: %w", err)
		}
		defer c.Close()
		o.docker = c
	}
	if !cfg.NodeMode() {
		if err := bridge.Remove(ctx, o.docker, cfg.Network.Name); err != nil {
			return fmt.Errorf("%w; the nftables rules were left in place", err)
		}
		log.Info("removed docker network", "network", cfg.Network.Name)
	}
	if o.nft == nil {
		k, err := netfilter.NewKernel(netfilter.KernelConfig{Logger: logger})
		if err != nil {
			return fmt.Errorf("opening nftables: %w", err)
		}
		o.nft = k
	}
	switch err := o.nft.Teardown(ctx); {
	case errors.Is(err, netfilter.ErrNotApplied):
		log.Info("no nftables tables to remove", "table", o.table)
	case err != nil:
		return fmt.Errorf("removing nftables tables %q: %w", o.table, err)
	default:
		log.Info("removed nftables tables", "table", o.table)
	}
	return nil
}

// daemonRunning reports whether a daemon answers on the socket.
func daemonRunning(ctx context.Context, path string) bool {
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
