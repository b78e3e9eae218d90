package bridge

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
)

func newFakeDocker() *dockertest.Docker { return dockertest.New() }

// inspect returns the network as Docker holds it.
func inspect(t *testing.T, d *dockertest.Docker, name string) network.Inspect {
	t.Helper()
	n, err := d.NetworkInspect(context.Background(), name, network.InspectOptions{})
	if err != nil {
		t.Fatalf("NetworkInspect(%s): %v", name, err)
	}
	return n
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
	opts := inspect(t, d, "clauderon").Options
	if opts[OptICC] != "false" || opts[OptMasquerade] != "false" || opts[OptBridgeName] != "clauderon0" {
		t.Errorf("created options = %v, want icc=false masquerade=false bridge name clauderon0", opts)
	}
	n2, err := Ensure(ctx, d, testSpec)
	if err != nil {
		t.Fatalf("Ensure (adopt): %v", err)
	}
	if n2.Created || n2.ID != n.ID || d.Calls("NetworkCreate") != 1 {
		t.Errorf("Ensure (adopt) = %+v after %d creates, want the same network adopted, one create", n2, d.Calls("NetworkCreate"))
	}
}

func TestEnsure_AllowIntraBridgeSetsICC(t *testing.T) {
	d := newFakeDocker()
	s := testSpec
	s.AllowIntraBridge = true
	if _, err := Ensure(context.Background(), d, s); err != nil {
		t.Fatal(err)
	}
	if got := inspect(t, d, "clauderon").Options[OptICC]; got != "true" {
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
			// Someone recreated the network by hand with other settings.
			if err := d.UpdateNetwork("clauderon", tt.mutate); err != nil {
				t.Fatal(err)
			}
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

func TestEnsure_DockerDownIsNotCreate(t *testing.T) {
	d := newFakeDocker()
	d.Fail("NetworkInspect", errors.New("cannot connect to the Docker daemon"))
	_, err := Ensure(context.Background(), d, testSpec)
	if err == nil || !strings.Contains(err.Error(), "inspecting docker network") || d.Calls("NetworkCreate") != 0 {
		t.Errorf("Ensure = %v (creates %d), want an inspect error and no create", err, d.Calls("NetworkCreate"))
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
	if err := Remove(context.Background(), d, "clauderon"); err != nil {
		t.Errorf("Remove = %v, want removed", err)
	}
	if _, err := d.NetworkInspect(context.Background(), "clauderon", network.InspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("NetworkInspect after Remove = %v, want not found", err)
	}
}
