package main

import (
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
)

// TestStatus_ContainerOnAnotherNetworkIsShownRefused: an operator must see
// why a container that is also attached elsewhere gets no credential.
func TestStatus_ContainerOnAnotherNetworkIsShownRefused(t *testing.T) {
	got := containers([]api.Container{
		{Name: "ok", IP: "10.213.0.2", Profile: "default"},
		{Name: "leaky", IP: "10.213.0.3", Profile: "default", OtherNetworks: []string{"bridge"}},
	})
	if len(got) != 2 || strings.Contains(got[0], "REFUSED") {
		t.Fatalf("containers = %q", got)
	}
	if !strings.Contains(got[1], "REFUSED: also on bridge") {
		t.Errorf("containers[1] = %q, want it marked REFUSED with the other network", got[1])
	}
}
