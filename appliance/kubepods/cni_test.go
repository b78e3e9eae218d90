package kubepods

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type iface struct {
	Name    string `json:"name"`
	Mac     string `json:"mac,omitempty"`
	Sandbox string `json:"sandbox,omitempty"`
}

// bridgeIfaces is what the bridge plugin reports: bridge, host veth, pod side.
func bridgeIfaces(veth string) []iface {
	return []iface{{Name: "ck8s0", Mac: "aa:00:00:00:00:01"}, {Name: veth, Mac: "aa:00:00:00:00:02"},
		{Name: "eth0", Mac: "aa:00:00:00:00:03", Sandbox: "/var/run/netns/cni-1234"}}
}

// cniCacheJSON renders a libcni cniCacheV1 file.
func cniCacheJSON(t testing.TB, ifaces []iface, cidr string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"kind": "cniCacheV1", "containerId": "c0ffee", "config": "eyJ9", "ifName": "eth0", "networkName": "k8s-pod-network",
		"cniArgs": [][]string{{"K8S_POD_NAMESPACE", "team"}, {"K8S_POD_NAME", "api"}},
		"result": map[string]any{"cniVersion": "1.0.0", "interfaces": ifaces,
			"ips":    []map[string]any{{"address": cidr, "gateway": "10.215.0.1", "interface": 2}},
			"routes": []map[string]any{{"dst": "0.0.0.0/0"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeAged writes a cache file modified age ago.
func writeAged(t *testing.T, dir, name, body string, age time.Duration) {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, body)
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestCNIResults(t *testing.T) {
	ip := netip.MustParseAddr("10.215.0.5")
	for _, tc := range []struct {
		name    string
		bridge  string
		files   func(t *testing.T, dir string)
		want    string
		wantErr string
	}{
		{"bridge_plugin_bridge_by_position", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("veth1a2b3c4d"), "10.215.0.5/24"), 0)
		}, "veth1a2b3c4d", ""},
		{"bridge_plugin_bridge_by_name", "ck8s0", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("veth1a2b3c4d"), "10.215.0.5/24"), 0)
		}, "veth1a2b3c4d", ""},
		{"result_of_another_bridge", "cni0", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("veth1a2b3c4d"), "10.215.0.5/24"), 0)
		}, "", "not for bridge cni0"},
		{"ptp_plugin_host_veth_only", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, []iface{{Name: "vethptp1"}, {Name: "eth0", Sandbox: "/var/run/netns/x"}}, "10.215.0.5/32"), 0)
		}, "vethptp1", ""},
		{"legacy_bare_result", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", `{"cniVersion":"0.4.0","interfaces":[{"name":"ck8s0"},{"name":"vethold"},{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.215.0.5/24"}]}`, 0)
		}, "vethold", ""},
		{"unknown_address", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("vethother"), "10.215.0.6/24"), 0)
		}, "", "no CNI result"},
		{"unparsable_files_skipped", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "garbage", "{not json", 0)
			writeAged(t, dir, "other-kind", `{"kind":"somethingElse","result":{}}`, 0)
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("vethgood"), "10.215.0.5/24"), time.Hour)
		}, "vethgood", ""},
		{"stale_duplicate_newest_wins", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-old-eth0", cniCacheJSON(t, bridgeIfaces("vethstale"), "10.215.0.5/24"), time.Hour)
			writeAged(t, dir, "net-new-eth0", cniCacheJSON(t, bridgeIfaces("vethfresh"), "10.215.0.5/24"), time.Minute)
		}, "vethfresh", ""},
		{"symlink_not_followed", "", func(t *testing.T, dir string) {
			outside := filepath.Join(t.TempDir(), "planted")
			writeFile(t, outside, cniCacheJSON(t, bridgeIfaces("vethplanted"), "10.215.0.5/24"))
			if err := os.Symlink(outside, filepath.Join(dir, "net-c1-eth0")); err != nil {
				t.Fatal(err)
			}
		}, "", "no CNI result"},
		{"oversized_file_skipped", "", func(t *testing.T, dir string) {
			big := cniCacheJSON(t, bridgeIfaces("vethbig"), "10.215.0.5/24")
			big = big[:len(big)-1] + `,"pad":"` + strings.Repeat("x", maxCNIFileBytes) + `"}`
			writeAged(t, dir, "net-c1-eth0", big, 0)
		}, "", "no CNI result"},
		{"invalid_interface_name", "", func(t *testing.T, dir string) {
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, bridgeIfaces("veth x"), "10.215.0.5/24"), 0)
		}, "", "invalid interface name"},
		{"two_host_interfaces", "", func(t *testing.T, dir string) {
			ifs := append(bridgeIfaces("vetha"), iface{Name: "vethb"})
			writeAged(t, dir, "net-c1-eth0", cniCacheJSON(t, ifs, "10.215.0.5/24"), 0)
		}, "", "want one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.files(t, dir)
			got, err := CNIResults(dir, tc.bridge)(ip, "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("veth = %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("veth = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCNIResults_MissingDir(t *testing.T) {
	_, err := CNIResults(filepath.Join(t.TempDir(), "nope"), "")(netip.MustParseAddr("10.215.0.5"), "")
	if err == nil || !strings.Contains(err.Error(), "reading the CNI results cache") {
		t.Errorf("err = %v", err)
	}
}

// TestCNIResults_CacheFollowsTheFiles: parsed files are kept, but a file
// that changes (mtime) is read again and a removed one forgotten.
func TestCNIResults_CacheFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	ip := netip.MustParseAddr("10.215.0.5")
	veth := CNIResults(dir, "")
	check := func(want string) {
		t.Helper()
		got, err := veth(ip, "")
		if want == "" {
			if err == nil {
				t.Errorf("veth = %q, want an error", got)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("veth = %q, %v; want %q", got, err, want)
		}
	}
	writeAged(t, dir, "net-a-eth0", cniCacheJSON(t, bridgeIfaces("vetha"), "10.215.0.5/24"), time.Hour)
	check("vetha")
	writeAged(t, dir, "net-b-eth0", cniCacheJSON(t, bridgeIfaces("vethb"), "10.215.0.5/24"), time.Minute)
	check("vethb")
	// a rewritten with a newer mtime: read again, and now the newest
	writeAged(t, dir, "net-a-eth0", cniCacheJSON(t, bridgeIfaces("vethA2"), "10.215.0.5/24"), 0)
	check("vethA2")
	for _, n := range []string{"net-a-eth0", "net-b-eth0"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	check("")
}

func BenchmarkCNIResults(b *testing.B) {
	dir := b.TempDir()
	for i := range 200 {
		body := cniCacheJSON(b, bridgeIfaces(fmt.Sprintf("veth%d", i)), fmt.Sprintf("10.215.%d.%d/16", i/250, i%250+2))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("net-%d-eth0", i)), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	veth := CNIResults(dir, "")
	ip := netip.MustParseAddr("10.215.0.100")
	for b.Loop() {
		if _, err := veth(ip, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCNIResults_FileOfAnotherPodIsNotUsed: libcni's cniArgs name the pod
// a result was made for; a stale result of a deleted pod that held the
// same address (newer or not) never names the new pod's veth.
func TestCNIResults_FileOfAnotherPodIsNotUsed(t *testing.T) {
	dir := t.TempDir()
	withPod := func(veth, uid string) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(cniCacheJSON(t, bridgeIfaces(veth), "10.215.0.5/24")), &m); err != nil {
			t.Fatal(err)
		}
		m["cniArgs"] = [][]string{{"K8S_POD_NAMESPACE", "team"}, {"K8S_POD_UID", uid}}
		b, _ := json.Marshal(m)
		return string(b)
	}
	writeAged(t, dir, "net-new-eth0", withPod("vethnew", "uid-new"), time.Hour)
	writeAged(t, dir, "net-old-eth0", withPod("vethold", "uid-old"), 0) // newer, but another pod's
	veth := CNIResults(dir, "")
	ip := netip.MustParseAddr("10.215.0.5")
	if got, err := veth(ip, "uid-new"); err != nil || got != "vethnew" {
		t.Errorf("veth(new pod) = %q, %v; want vethnew", got, err)
	}
	if got, err := veth(ip, "uid-other"); err == nil {
		t.Errorf("veth(a pod no file names) = %q; want an error", got)
	}
}
