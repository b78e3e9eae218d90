package dnsredir

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite testdata/fuzz/FuzzDNSHandler from fuzzSeeds")

// hdr builds a 12-byte DNS header.
func hdr(id, flags, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fuzzSeeds are the annotated seeds; testdata/fuzz/FuzzDNSHandler holds the
// same inputs (regenerate with -update-fuzz-corpus) and
// testdata/fuzz/README.md describes each file.
var fuzzSeeds = []struct {
	file string
	data []byte
	tcp  bool
}{
	{"valid-a-query-allowed-name", cat(
		hdr(0x1234, 0x0100, 1, 0, 0, 1),                          // id, RD, 1 question, 1 additional
		[]byte("\x07allowed\x07example\x00"), []byte{0, 1, 0, 1}, // allowed.example. A IN
		[]byte{0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0}, // OPT: root, type 41, udp 1232, ext-rcode 0, version 0, flags 0, rdlen 0
	), false},
	{"valid-txt-query-denied-name", cat(
		hdr(0x0001, 0x0100, 1, 0, 0, 0),
		[]byte("\x10c2VjcmV0LXRva2Vu\x04evil\x07example\x00"), []byte{0, 16, 0, 1}, // base64 label TXT IN
	), false},
	{"no-question", hdr(0x0002, 0x0100, 0, 0, 0, 0), false},
	{"compression-pointer-loop", cat(
		hdr(0x0003, 0x0100, 1, 0, 0, 0),
		[]byte{0xc0, 12}, // name: a pointer to offset 12, itself
		[]byte{0, 1, 0, 1},
	), false},
	{"huge-edns", cat(
		hdr(0x0004, 0x0100, 1, 0, 0, 1),
		[]byte("\x09intercept\x07example\x00"), []byte{0, 1, 0, 1},
		[]byte{0, 0, 41, 0xff, 0xff, 0, 0, 0x80, 0},                       // OPT: udp 65535, DO set
		[]byte{0x03, 0xec}, []byte{0, 12, 0x03, 0xe8}, make([]byte, 1000), // rdlen 1004: one 1000-byte padding option
	), false},
	{"edns-version-1", cat(
		hdr(0x0005, 0x0100, 1, 0, 0, 1),
		[]byte("\x07allowed\x07example\x00"), []byte{0, 1, 0, 1},
		[]byte{0, 0, 41, 0x10, 0x00, 0, 1, 0, 0, 0, 0}, // OPT version 1
	), false},
	{"response-bit-set", cat(hdr(0x0006, 0x8180, 1, 0, 0, 0), []byte("\x07allowed\x07example\x00"), []byte{0, 1, 0, 1}), false},
	{"opcode-update", cat(hdr(0x0007, 5<<11, 1, 0, 0, 0), []byte("\x07example\x00"), []byte{0, 6, 0, 1}), false},
	{"binary-label", cat(hdr(0x0008, 0x0100, 1, 0, 0, 0), []byte("\x04\x00\xff.\\\x07example\x00"), []byte{0, 1, 0, 1}), false},
	{"many-answers-over-tcp", cat(hdr(0x0009, 0x0100, 1, 0, 0, 0), []byte("\x07ALLOWED\x07example\x00"), []byte{0, 1, 0, 1}), true},
	{"chaos-version-bind", cat(hdr(0x000a, 0x0100, 1, 0, 0, 0), []byte("\x07version\x04bind\x00"), []byte{0, 16, 0, 3}), false},
}

// fuzzResolver answers every name with 40 addresses and records the names.
type fuzzResolver struct {
	mu    sync.Mutex
	names []string
}

func (r *fuzzResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.names = append(r.names, host)
	r.mu.Unlock()
	out := make([]netip.Addr, 40)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
	}
	return out, nil
}

type fuzzPolicy struct{}

func (fuzzPolicy) Decide(name string) (Decision, string) {
	switch name {
	case "allowed.example":
		return Allow, "allow"
	case "intercept.example":
		return Intercept, "intercept"
	}
	return Deny, "deny"
}

// FuzzDNSHandler unpacks arbitrary bytes and serves the message: no panic,
// exactly one reply (none for a response sent as a query: a documented
// drop), replies matching the query's id and within the transport's size
// limit, and no denied name ever reaching the resolver. Bytes that do not
// unpack never reach the Handler (miekg/dns answers FORMERR or drops them);
// for those only the server's header screen is exercised.
func FuzzDNSHandler(f *testing.F) {
	if *updateFuzzCorpus {
		writeFuzzCorpus(f)
	}
	for _, s := range fuzzSeeds {
		f.Add(s.data, s.tcp)
	}
	res := &fuzzResolver{}
	h, err := NewHandler(Config{
		Reloadable:    Reloadable{Policy: fuzzPolicy{}, InterceptAnswer: func(string) []netip.Addr { return nil }},
		Resolver:      res,
		RatePerSecond: -1,
		MaxAnswers:    40,
	})
	if err != nil {
		f.Fatal(err)
	}
	srv := &Server{h: h}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		if len(data) >= 12 {
			var dh dns.Header
			dh.Id, dh.Bits = binary.BigEndian.Uint16(data), binary.BigEndian.Uint16(data[2:])
			dh.Qdcount, dh.Ancount = binary.BigEndian.Uint16(data[4:]), binary.BigEndian.Uint16(data[6:])
			dh.Nscount, dh.Arcount = binary.BigEndian.Uint16(data[8:]), binary.BigEndian.Uint16(data[10:])
			_ = srv.acceptMsg(dh)
		}
		msg := new(dns.Msg)
		if err := msg.Unpack(data); err != nil {
			return
		}
		rec := dnstest.NewRecorderFrom(dnstest.ClientAddr, tcp)
		h.ServeDNS(rec, msg)
		checkFuzzReply(t, msg, rec, tcp)
		if p := h.Stats().Panics; p != 0 {
			t.Fatalf("handler panicked (%d recovered panics)", p)
		}
		res.mu.Lock()
		defer res.mu.Unlock()
		for _, n := range res.names {
			if d, _ := (fuzzPolicy{}).Decide(n); d == Deny {
				t.Fatalf("denied name %q reached the resolver", n)
			}
		}
	})
}

func checkFuzzReply(t *testing.T, msg *dns.Msg, rec *dnstest.Recorder, tcp bool) {
	t.Helper()
	if msg.Response {
		if rec.Writes() != 0 {
			t.Fatalf("response sent as a query got %d replies, want 0", rec.Writes())
		}
		return
	}
	if rec.Writes() != 1 {
		t.Fatalf("%d replies, want exactly 1", rec.Writes())
	}
	reply, packed := rec.Msg(), rec.Packed()
	if reply == nil {
		t.Fatal("reply did not pack")
	}
	if reply.Id != msg.Id || !reply.Response {
		t.Fatalf("reply id %d QR %v, want id %d QR set", reply.Id, reply.Response, msg.Id)
	}
	limit := dns.MinMsgSize
	if opt := msg.IsEdns0(); opt != nil {
		limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), MaxUDPSize)
	}
	if !tcp && len(packed[0]) > limit {
		t.Fatalf("UDP reply of %d bytes exceeds the %d-byte limit", len(packed[0]), limit)
	}
}

func writeFuzzCorpus(f *testing.F) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDNSHandler")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzSeeds {
		var b strings.Builder
		fmt.Fprintf(&b, "go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s.data, s.tcp)
		if err := os.WriteFile(filepath.Join(dir, s.file), []byte(b.String()), 0o644); err != nil {
			f.Fatal(err)
		}
	}
}

// TestFuzzSeeds_AreWhatTheySay keeps the annotated seeds honest: each one
// reaches the outcome its name and README line promise.
func TestFuzzSeeds_AreWhatTheySay(t *testing.T) {
	want := map[string]string{
		"valid-a-query-allowed-name":  "NOERROR/40",
		"valid-txt-query-denied-name": "NXDOMAIN/0",
		"no-question":                 "FORMERR/0",
		"compression-pointer-loop":    "unpack error",
		"huge-edns":                   "NOERROR/40",
		"edns-version-1":              "BADSIG/0", // rcode 16: BADVERS, printed by miekg/dns under its TSIG name
		"response-bit-set":            "dropped",
		"opcode-update":               "NOTIMP/0",
		"binary-label":                "NXDOMAIN/0",
		"many-answers-over-tcp":       "NOERROR/40",
		"chaos-version-bind":          "REFUSED/0",
	}
	h, err := NewHandler(Config{Reloadable: Reloadable{Policy: fuzzPolicy{}}, Resolver: &fuzzResolver{}, RatePerSecond: -1, MaxAnswers: 40})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds {
		t.Run(s.file, func(t *testing.T) {
			got := "unpack error"
			msg := new(dns.Msg)
			if err := msg.Unpack(s.data); err == nil {
				rec := dnstest.NewRecorderFrom(dnstest.ClientAddr, s.tcp)
				h.ServeDNS(rec, msg)
				got = "dropped"
				if m := rec.Msg(); m != nil {
					got = fmt.Sprintf("%s/%d", dns.RcodeToString[m.Rcode], len(m.Answer))
				}
			}
			if got != want[s.file] {
				t.Errorf("seed %s: %s, want %s", s.file, got, want[s.file])
			}
		})
	}
}
