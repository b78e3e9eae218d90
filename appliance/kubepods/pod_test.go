package kubepods

import (
	"net/netip"
	"testing"

	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/google/go-cmp/cmp"
)

func TestPodContainer(t *testing.T) {
	subnet := netip.MustParsePrefix(testSubnet)
	ip := netip.MustParseAddr("10.215.0.5")
	base := identity.Container{ID: "uid-api", Name: "team/api", IP: ip, Labels: map[string]string{"app": "api"},
		Namespace: "team", ServiceAccount: "agent"}
	with := func(f func(*identity.Container)) identity.Container {
		c := base
		c.Labels = map[string]string{"app": "api"}
		f(&c)
		return c
	}
	type v6 = struct {
		IP string `json:"ip"`
	}
	for _, tc := range []struct {
		name string
		mod  func(*pod)
		want identity.Container
		ok   bool
	}{
		{"running_pod_in_subnet", nil, base, true},
		{"pending_pod_with_address", func(p *pod) { p.Status.Phase = "Pending" }, base, true},
		{"terminating_pod_keeps_its_address", terminating, base, true},
		{"profile_label", func(p *pod) { p.Metadata.Labels[identity.DefaultProfileLabel] = "github" },
			with(func(c *identity.Container) {
				c.Labels[identity.DefaultProfileLabel], c.Profile, c.Labelled = "github", "github", true
			}), true},
		{"empty_profile_label_is_labelled", func(p *pod) { p.Metadata.Labels[identity.DefaultProfileLabel] = "" },
			with(func(c *identity.Container) { c.Labels[identity.DefaultProfileLabel], c.Labelled = "", true }), true},
		{"no_service_account_is_default", func(p *pod) { p.Spec.ServiceAccountName = "" },
			with(func(c *identity.Container) { c.ServiceAccount = "default" }), true},
		{"dual_stack_ipv6_primary", func(p *pod) {
			p.Status.PodIP = "fd00::5"
			p.Status.PodIPs = []v6{{IP: "fd00::5"}, {IP: "10.215.0.5"}}
		}, base, true},
		{"host_network", func(p *pod) { p.Spec.HostNetwork = true }, identity.Container{}, false},
		{"succeeded", func(p *pod) { p.Status.Phase = "Succeeded" }, identity.Container{}, false},
		{"failed", func(p *pod) { p.Status.Phase = "Failed" }, identity.Container{}, false},
		{"outside_subnet", func(p *pod) { p.Status.PodIP, p.Status.PodIPs = "10.216.0.5", nil }, identity.Container{}, false},
		{"ipv6_only", func(p *pod) { p.Status.PodIP, p.Status.PodIPs = "fd00::5", []v6{{IP: "fd00::5"}} }, identity.Container{}, false},
		{"no_address_yet", func(p *pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }, identity.Container{}, false},
		{"garbage_address", func(p *pod) { p.Status.PodIP, p.Status.PodIPs = "10.215.0.500", nil }, identity.Container{}, false},
		{"another_node", func(p *pod) { p.Spec.NodeName = "node-b" }, identity.Container{}, false},
		{"no_uid", func(p *pod) { p.Metadata.UID = "" }, identity.Container{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mkPod("api", "10.215.0.5")
			if tc.mod != nil {
				tc.mod(&p)
			}
			got, ok := podContainer(&p, testNode, subnet, identity.DefaultProfileLabel)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if diff := cmp.Diff(got, tc.want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("podContainer (-got +want):\n%s", diff)
			}
		})
	}
}

func TestDecodeEvent(t *testing.T) {
	ev, err := decodeEvent([]byte(`{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"api","namespace":"team","uid":"u1","resourceVersion":"7","labels":{"a":"b"},"deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"node-a","hostNetwork":false,"serviceAccountName":"sa"},"status":{"phase":"Running","podIP":"10.215.0.5","podIPs":[{"ip":"10.215.0.5"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != eventAdded || ev.RV != "7" || ev.Pod.Metadata.UID != "u1" || ev.Pod.Metadata.DeletionTimestamp == nil ||
		ev.Pod.Spec.ServiceAccountName != "sa" || ev.Pod.Status.PodIPs[0].IP != "10.215.0.5" {
		t.Errorf("decodeEvent = %+v", ev)
	}
	_, err = decodeEvent([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}`))
	if !isGone(err) {
		t.Errorf("ERROR 410 = %v, want gone", err)
	}
}
