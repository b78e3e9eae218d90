package kubepods

import (
	"net/netip"
	"testing"

	"github.com/clauderon/clauderond/appliance/identity"
)

// FuzzDecodeEvent feeds arbitrary watch lines to the decoder and what it
// accepts to the pod conversion: no panic, and an accepted pod event always
// names a uid. Run it with
//
//	go test -run '^$' -fuzz FuzzDecodeEvent -fuzztime 30s ./appliance/kubepods/
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		// a pod added on the node, with every field the table reads
		`{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"api","namespace":"team","uid":"u1","resourceVersion":"7","labels":{"clauderon.profile":"github"}},"spec":{"nodeName":"node-a","serviceAccountName":"sa"},"status":{"phase":"Running","podIP":"10.215.0.5","podIPs":[{"ip":"10.215.0.5"}]}}}`,
		// terminating, dual-stack with IPv6 first
		`{"type":"MODIFIED","object":{"metadata":{"uid":"u2","deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"node-a"},"status":{"podIP":"fd00::5","podIPs":[{"ip":"fd00::5"},{"ip":"10.215.0.6"}]}}}`,
		`{"type":"DELETED","object":{"metadata":{"uid":"u1"}}}`,
		`{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12345"}}}`,
		`{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}`,
		`{"type":"ADDED","object":null}`,         // null object: no uid, refused
		`{"type":"ADDED","object":{"status":1}}`, // wrong field type
		`{"type":`,                               // truncated
		"\x00\xff",
	} {
		f.Add([]byte(s))
	}
	subnet := netip.MustParsePrefix(testSubnet)
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := decodeEvent(line)
		if err != nil {
			return
		}
		switch ev.Type {
		case eventAdded, eventModified, eventDeleted:
			if ev.Pod == nil || ev.Pod.Metadata.UID == "" {
				t.Fatalf("accepted %s without a pod uid: %q", ev.Type, line)
			}
			if c, ok := podContainer(ev.Pod, testNode, subnet, identity.DefaultProfileLabel); ok && !subnet.Contains(c.IP) {
				t.Fatalf("pod outside the subnet accepted: %v", c.IP)
			}
		case eventBookmark:
			if ev.RV == "" {
				t.Fatalf("bookmark without a resource version accepted")
			}
		default:
			t.Fatalf("accepted event type %q", ev.Type)
		}
	})
}
