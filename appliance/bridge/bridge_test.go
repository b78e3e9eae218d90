package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
)

// fakeDocker is an in-memory DockerAPI keyed by network name.
type fakeDocker struct {
	nets    map[string]network.Inspect
	creates int
	failErr error
}

func newFakeDocker() *fakeDocker { return &fakeDocker{nets: map[string]network.Inspect{}} }

func (f *fakeDocker) find(id string) (network.Inspect, bool) {
	for _, n := range f.nets {
		if n.Name == id || n.ID == id {
			return n, true
		}
	}
	return network.Inspect{}, false
}

func (f *fakeDocker) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	if f.failErr != nil {
		return network.Inspect{}, f.failErr
	}
	n, ok := f.find(id)
	if !ok {
		return network.Inspect{}, fmt.Errorf("network %s: %w", id, cerrdefs.ErrNotFound)
	}
	return n, nil
}

func (f *fakeDocker) NetworkCreate(_ context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	if _, ok := f.nets[name]; ok {
		return network.CreateResponse{}, fmt.Errorf("network %s: %w", name, cerrdefs.ErrConflict)
	}
	f.creates++
	id := fmt.Sprintf("id%d", f.creates)
	f.nets[name] = network.Inspect{Name: name, ID: id, Driver: o.Driver, IPAM: *o.IPAM, Options: o.Options, Labels: o.Labels}
	return network.CreateResponse{ID: id}, nil
}

func (f *fakeDocker) NetworkRemove(_ context.Context, id string) error {
	n, ok := f.find(id)
	if !ok {
		return fmt.Errorf("network %s: %w", id, cerrdefs.ErrNotFound)
	}
	delete(f.nets, n.Name)
	return nil
}

var testSpec = Spec{Name: "clauderon", Bridge: "clauderon0", Subnet: netip.MustParsePrefix("10.213.0.0/24")}

func TestEnsure_CreatesThenAdopts(t *testing.T) {
	d := newFakeDocker()
	ctx := context.Background()
	n, err := Ensure(ctx, d, testSpec)
	if err != nil {
		t.Fatalf("Ensure (create): %v", err)
	}
	if !n.Created || n.Gateway != netip.MustParseAddr("10.213.0.1") || n.Bridge != "clauderon0" {
		t.Errorf("Ensure (create) = %+v, want created with gateway 10.213.0.1 on clauderon0", n)
	}
	opts := d.nets["clauderon"].Options
	if opts[OptICC] != "false" || opts[OptMasquerade] != "false" || opts[OptBridgeName] != "clauderon0" {
		t.Errorf("created options = %v, want icc=false masquerade=false bridge name clauderon0", opts)
	}
	n2, err := Ensure(ctx, d, testSpec)
	if err != nil {
		t.Fatalf("Ensure (adopt): %v", err)
	}
	if n2.Created || n2.ID != n.ID || d.creates != 1 {
		t.Errorf("Ensure (adopt) = %+v after %d creates, want the same network adopted, one create", n2, d.creates)
	}
}

func TestEnsure_AllowIntraBridgeSetsICC(t *testing.T) {
	d := newFakeDocker()
	s := testSpec
	s.AllowIntraBridge = true
	if _, err := Ensure(context.Background(), d, s); err != nil {
		t.Fatal(err)
	}
	if got := d.nets["clauderon"].Options[OptICC]; got != "true" {
		t.Errorf("enable_icc = %q, want true", got)
	}
}

func TestEnsure_MismatchIsRefusedWithFix(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*network.Inspect)
		want   string
	}{
		{"wrong_subnet", func(n *network.Inspect) { n.IPAM.Config[0].Subnet = "10.99.0.0/24" }, "subnet is [10.99.0.0/24], want [10.213.0.0/24]"},
		{"wrong_bridge_name", func(n *network.Inspect) { n.Options[OptBridgeName] = "br-123" }, `bridge name is "br-123", want "clauderon0"`},
		{"icc_default_on", func(n *network.Inspect) { delete(n.Options, OptICC) }, "enable_icc is true, want false"},
		{"masquerade_default_on", func(n *network.Inspect) { delete(n.Options, OptMasquerade) }, "enable_ip_masquerade is true"},
		{"overlay_driver", func(n *network.Inspect) { n.Driver = "overlay" }, `driver is "overlay"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDocker()
			if _, err := Ensure(context.Background(), d, testSpec); err != nil {
				t.Fatal(err)
			}
			n := d.nets["clauderon"]
			n.Options = clone(n.Options)
			n.IPAM.Config = append([]network.IPAMConfig(nil), n.IPAM.Config...)
			tt.mutate(&n)
			d.nets["clauderon"] = n
			_, err := Ensure(context.Background(), d, testSpec)
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("Ensure = %v, want *MismatchError", err)
			}
			for _, want := range []string{tt.want, "clauderond teardown", "docker network rm clauderon"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func clone(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestEnsure_DockerDownIsNotCreate(t *testing.T) {
	d := newFakeDocker()
	d.failErr = errors.New("cannot connect to the Docker daemon")
	_, err := Ensure(context.Background(), d, testSpec)
	if err == nil || !strings.Contains(err.Error(), "inspecting docker network") || d.creates != 0 {
		t.Errorf("Ensure = %v (creates %d), want an inspect error and no create", err, d.creates)
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		s    Spec
		want string
	}{
		{"ok", testSpec, ""},
		{"long_bridge", Spec{Name: "x", Bridge: "abcdefghijklmnop", Subnet: testSpec.Subnet}, "1 to 15 characters"},
		{"v6", Spec{Name: "x", Bridge: "b", Subnet: netip.MustParsePrefix("fd00::/64")}, "not an IPv4 CIDR"},
		{"tiny", Spec{Name: "x", Bridge: "b", Subnet: netip.MustParsePrefix("10.0.0.0/30")}, "too small"},
		{"no_name", Spec{Bridge: "b", Subnet: testSpec.Subnet}, "network.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestRemove_MissingIsFine(t *testing.T) {
	d := newFakeDocker()
	if err := Remove(context.Background(), d, "nope"); err != nil {
		t.Errorf("Remove(missing) = %v, want nil", err)
	}
	if _, err := Ensure(context.Background(), d, testSpec); err != nil {
		t.Fatal(err)
	}
	if err := Remove(context.Background(), d, "clauderon"); err != nil || len(d.nets) != 0 {
		t.Errorf("Remove = %v, nets %v; want removed", err, d.nets)
	}
}
