package appliance

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
)

// nflogMessage builds an NFLOG packet message body like the kernel's.
func nflogMessage(t *testing.T, prefix string, payload []byte) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(nfulaPrefix, append([]byte(prefix), 0))
	ae.Bytes(nfulaPayload, payload)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 0}, b...)
}

func ipv4TCP(src, dst [4]byte, dport uint16) []byte {
	p := make([]byte, 24)
	p[0] = 0x45 // v4, 20-byte header
	p[9] = 6    // TCP
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[20:22], 40000)
	binary.BigEndian.PutUint16(p[22:24], dport)
	return p
}

func TestParseWouldDeny(t *testing.T) {
	now := time.Unix(1000, 0)
	msg := nflogMessage(t, "clauderon would-deny: ", ipv4TCP([4]byte{10, 213, 0, 2}, [4]byte{192, 0, 2, 9}, 5432))
	r, ok := parseWouldDeny(msg, now)
	if !ok || r.Decision != "would-deny" || r.SrcIP != "10.213.0.2" || r.OrigDst != "192.0.2.9:5432" || r.Rule != "forward-tcp" {
		t.Fatalf("parseWouldDeny = %+v, %v", r, ok)
	}
	if _, ok := parseWouldDeny(nflogMessage(t, "someone else: ", ipv4TCP([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 1)), now); ok {
		t.Error("a packet logged with another prefix became a record")
	}
	for name, bad := range map[string][]byte{"short": {1, 2}, "truncated_ip": nflogMessage(t, "clauderon would-deny: ", []byte{0x45, 0, 0}),
		"ipv6": nflogMessage(t, "clauderon would-deny: ", append([]byte{0x60}, make([]byte, 39)...))} {
		if _, ok := parseWouldDeny(bad, now); ok {
			t.Errorf("%s: parsed as a record", name)
		}
	}
}

func TestFirstInWindow_DedupsFlows(t *testing.T) {
	seen := map[string]time.Time{}
	r := record{SrcIP: "10.213.0.2", OrigDst: "192.0.2.9:5432", Rule: "forward-tcp"}
	now := time.Unix(1000, 0)
	if !firstInWindow(seen, r, now) {
		t.Fatal("first packet of a flow not reported")
	}
	if firstInWindow(seen, r, now.Add(time.Second)) {
		t.Error("second packet of the same flow reported again within the window")
	}
	if !firstInWindow(seen, r, now.Add(2*wouldDenyDedupWindow)) {
		t.Error("flow not reported again after the window")
	}
}

func FuzzParseWouldDeny(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 8, 0, 10, 0, 'c', 'l', 'a', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseWouldDeny(b, time.Unix(0, 0)) // must not panic
	})
}
