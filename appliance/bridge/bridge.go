// Package bridge owns the dedicated Docker network that agent containers join:
// it creates it, adopts it when it already exists with the right settings,
// refuses (with a fix) when it exists with the wrong ones, removes it on an
// explicit teardown, and finds and watches the kernel bridge link and its
// gateway address through netlink.
//
// It refuses to touch firewall rules, TLS, DNS or credentials: the caller
// (package appliance) turns the Network it returns into a netfilter spec and
// listener addresses. It never removes the network on its own; fail-closed
// means the network and the rules outlive the daemon.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
)

// Docker bridge driver options this package sets and checks.
const (
	OptBridgeName = "com.docker.network.bridge.name"
	OptICC        = "com.docker.network.bridge.enable_icc"
	OptMasquerade = "com.docker.network.bridge.enable_ip_masquerade"
	// LabelOwner marks networks created by clauderond.
	LabelOwner = "org.clauderon.owner"
)

// DockerAPI is the part of the Docker client this package uses.
// *client.Client satisfies it.
type DockerAPI interface {
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkRemove(ctx context.Context, networkID string) error
}

// Spec is the network the operator asked for (config keys network.*).
type Spec struct {
	Name             string       // docker network name, e.g. "clauderon"
	Bridge           string       // kernel bridge name, e.g. "clauderon0"
	Subnet           netip.Prefix // IPv4 subnet, e.g. 10.213.0.0/24
	AllowIntraBridge bool         // container-to-container traffic (enable_icc)
}

// Network is the network as it exists in Docker.
type Network struct {
	ID      string
	Name    string
	Bridge  string
	Subnet  netip.Prefix
	Gateway netip.Addr
	Created bool // true when Ensure created it, false when it adopted it
	// Pending: node mode found no bridge (or no gateway address on it)
	// yet; the CNI adds them with the node's first pod.
	Pending bool
}

// MismatchError reports a network that exists under the requested name with
// settings that differ from the spec. It is never adopted silently.
type MismatchError struct {
	Name  string
	Diffs []string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("docker network %q exists with different settings (%s); "+
		"run `clauderond teardown` (or `docker network rm %s` after stopping its containers), then start clauderond again, "+
		"or change network.* in the config to match",
		e.Name, strings.Join(e.Diffs, "; "), e.Name)
}

// Validate checks a Spec before any Docker call.
func (s Spec) Validate() error {
	switch {
	case s.Name == "":
		return errors.New("network.name is empty")
	case s.Bridge == "" || len(s.Bridge) > 15:
		return fmt.Errorf("network.bridge %q must be 1 to 15 characters (a Linux interface name)", s.Bridge)
	case !s.Subnet.IsValid() || !s.Subnet.Addr().Is4():
		return fmt.Errorf("network.subnet %q is not an IPv4 CIDR", s.Subnet)
	case s.Subnet.Bits() > 29:
		return fmt.Errorf("network.subnet %s is too small; use at most /29", s.Subnet)
	}
	return nil
}

// GatewayFor returns the address Docker's bridge gets: the first host of the subnet.
func GatewayFor(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}

// createOptions is what Ensure asks Docker for.
func createOptions(s Spec) network.CreateOptions {
	return network.CreateOptions{
		Driver: "bridge",
		IPAM: &network.IPAM{
			Driver: "default",
			Config: []network.IPAMConfig{{Subnet: s.Subnet.Masked().String(), Gateway: GatewayFor(s.Subnet).String()}},
		},
		Options: map[string]string{
			OptBridgeName: s.Bridge,
			OptICC:        strconv.FormatBool(s.AllowIntraBridge),
			OptMasquerade: "false",
		},
		Labels: map[string]string{LabelOwner: "clauderond"},
	}
}

// Ensure adopts the network named s.Name when it matches s, creates it when
// it does not exist, and returns a *MismatchError when it exists with other
// settings.
func Ensure(ctx context.Context, d DockerAPI, s Spec) (Network, error) {
	if err := s.Validate(); err != nil {
		return Network{}, err
	}
	ins, err := d.NetworkInspect(ctx, s.Name, network.InspectOptions{})
	switch {
	case err == nil:
		return adopt(ins, s)
	case !cerrdefs.IsNotFound(err):
		return Network{}, fmt.Errorf("inspecting docker network %q: %w", s.Name, err)
	}
	resp, err := d.NetworkCreate(ctx, s.Name, createOptions(s))
	if err != nil {
		return Network{}, fmt.Errorf("creating docker network %q (bridge %s, subnet %s): %w; "+
			"if another network uses that subnet or bridge name, pick another network.subnet/network.bridge",
			s.Name, s.Bridge, s.Subnet, err)
	}
	ins, err = d.NetworkInspect(ctx, resp.ID, network.InspectOptions{})
	if err != nil {
		return Network{}, fmt.Errorf("inspecting new docker network %q: %w", s.Name, err)
	}
	n, err := adopt(ins, s)
	n.Created = true
	return n, err
}

// adopt checks an existing network against the spec.
func adopt(ins network.Inspect, s Spec) (Network, error) {
	diffs := Mismatches(ins, s)
	if len(diffs) > 0 {
		return Network{}, &MismatchError{Name: s.Name, Diffs: diffs}
	}
	gw := GatewayFor(s.Subnet)
	for _, c := range ins.IPAM.Config {
		if a, err := netip.ParseAddr(c.Gateway); err == nil {
			gw = a
		}
	}
	return Network{ID: ins.ID, Name: ins.Name, Bridge: s.Bridge, Subnet: s.Subnet.Masked(), Gateway: gw}, nil
}

// Mismatches lists, in operator words, how ins differs from s. Empty means adoptable.
func Mismatches(ins network.Inspect, s Spec) []string {
	var diffs []string
	if ins.Driver != "bridge" {
		diffs = append(diffs, fmt.Sprintf("driver is %q, want \"bridge\"", ins.Driver))
	}
	if got := ins.Options[OptBridgeName]; got != s.Bridge {
		diffs = append(diffs, fmt.Sprintf("bridge name is %q, want %q (network.bridge)", got, s.Bridge))
	}
	var subnets []string
	for _, c := range ins.IPAM.Config {
		subnets = append(subnets, c.Subnet)
	}
	if want := s.Subnet.Masked().String(); !slices.Equal(subnets, []string{want}) {
		diffs = append(diffs, fmt.Sprintf("subnet is %v, want [%s] (network.subnet)", subnets, want))
	}
	if got, want := optBool(ins.Options, OptICC, true), s.AllowIntraBridge; got != want {
		diffs = append(diffs, fmt.Sprintf("%s is %t, want %t (network.allow_intra_bridge)", OptICC, got, want))
	}
	if optBool(ins.Options, OptMasquerade, true) {
		diffs = append(diffs, fmt.Sprintf("%s is true, want false", OptMasquerade))
	}
	if ins.Internal {
		diffs = append(diffs, "network is internal, want a plain bridge")
	}
	return diffs
}

// optBool reads a Docker boolean option, with Docker's default when absent.
func optBool(opts map[string]string, key string, def bool) bool {
	v, ok := opts[key]
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def
	}
	return b
}

// Remove deletes the network named name. A missing network is not an error.
// Docker refuses while containers are attached; the error says so.
func Remove(ctx context.Context, d DockerAPI, name string) error {
	if err := d.NetworkRemove(ctx, name); err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("removing docker network %q: %w (stop the containers attached to it first: docker network inspect %s)", name, err, name)
	}
	return nil
}
