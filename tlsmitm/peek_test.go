package tlsmitm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

func TestPeekClientHello(t *testing.T) {
	big := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost, PadProtos: 80})
	tests := []struct {
		name     string
		in       []byte
		wantSNI  string
		wantALPN []string
		wantErr  error
	}{
		{name: "single_record", in: tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost, NextProtos: []string{"h2", "http/1.1"}}), wantSNI: apiHost, wantALPN: []string{"h2", "http/1.1"}},
		{name: "split_across_records_100_bytes", in: tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost, MaxRecordPayload: 100}), wantSNI: apiHost},
		{name: "split_one_byte_per_record", in: tlstest.MustClientHello(tlstest.HelloOptions{ServerName: "Api.Anthropic.COM", MaxRecordPayload: 1}), wantSNI: apiHost},
		{name: "large_hello_over_16k_in_several_records", in: big, wantSNI: apiHost},
		{name: "no_sni", in: tlstest.MustClientHello(tlstest.HelloOptions{}), wantSNI: ""},
		{name: "truncated_hello", in: tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost})[:60], wantErr: ErrNotClientHello},
		{name: "plain_http", in: []byte("GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"), wantErr: ErrNotClientHello},
		{name: "empty", in: nil, wantErr: ErrNotClientHello},
		{name: "garbage", in: bytes.Repeat([]byte{0x16, 0x03, 0x01, 0xff}, 50), wantErr: ErrNotClientHello},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(append([]byte(nil), tt.in...), []byte("trailing application bytes")...)
			if tt.wantErr != nil {
				in = tt.in
			}
			h, err := peekClientHello(bytes.NewReader(in), DefaultMaxHelloBytes)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if h.SNI != tt.wantSNI {
				t.Errorf("SNI = %q, want %q", h.SNI, tt.wantSNI)
			}
			if tt.wantALPN != nil && strings.Join(h.ALPN, ",") != strings.Join(tt.wantALPN, ",") {
				t.Errorf("ALPN = %q, want %q", h.ALPN, tt.wantALPN)
			}
			if !bytes.HasPrefix(in, h.Raw) || len(h.Raw) < len(tt.in) {
				t.Errorf("Raw (%d bytes) is not the recorded prefix of the input (%d hello bytes)", len(h.Raw), len(tt.in))
			}
		})
	}
}

func TestPeekClientHello_SizeCapped(t *testing.T) {
	// A handshake record header promising a 60 KiB hello, followed by an
	// endless stream: the peek must stop at the cap, not read forever.
	hdr := []byte{22, 3, 1, 0x40, 0x00, 1, 0x00, 0xf0, 0x00}
	r := io.MultiReader(bytes.NewReader(hdr), zeroReader{})
	h, err := peekClientHello(r, 4096)
	if err == nil {
		t.Fatal("want an error for an oversized hello")
	}
	if len(h.Raw) > 4096 {
		t.Errorf("read %d bytes, want <= cap 4096", len(h.Raw))
	}
	big := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost, PadProtos: 80})
	if _, err := peekClientHello(bytes.NewReader(big), 8<<10); !errors.Is(err, ErrHelloTooLarge) {
		t.Errorf("a %d-byte hello under an 8 KiB cap: err = %v, want ErrHelloTooLarge", len(big), err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestPeekClientHello_SlowClientTimesOut(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.HelloTimeout = 200 * time.Millisecond }})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: apiHost})
	c.Write(hello[:10]) // then stall
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("read succeeded, want the server to close the stalled connection")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("server held a stalled hello for %v, want ~200ms", d)
	}
	ev := h.rec.next(t)
	if ev.Decision != Deny || ev.Rule != PolicyBadHello || !strings.Contains(ev.Err, "timeout") {
		t.Errorf("audit = %+v, want deny/%s with a timeout", ev, PolicyBadHello)
	}
}

func TestCheckSNI(t *testing.T) {
	tests := []struct {
		sni  string
		want error
	}{
		{"api.anthropic.com", nil},
		{"", ErrNoSNI},
		{"10.0.0.1", ErrIPLiteralSNI},
		{"::1", ErrIPLiteralSNI},
		{"bad name.com", ErrNoRoute},
	}
	for _, tt := range tests {
		if err := checkSNI(tt.sni); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("checkSNI(%q) = %v, want %v", tt.sni, err, tt.want)
		}
	}
}

// FuzzPeekClientHello: no panic, no hang (the reader is finite), the bytes
// recorded never exceed the cap and are a prefix of the input, and an
// accepted hello yields a normalised name.
func FuzzPeekClientHello(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 16 << 10
		h, err := peekClientHello(bytes.NewReader(data), max)
		if len(h.Raw) > max {
			t.Fatalf("recorded %d bytes, cap %d", len(h.Raw), max)
		}
		if !bytes.HasPrefix(data, h.Raw) {
			t.Fatal("recorded bytes are not a prefix of the input")
		}
		if err == nil && h.SNI != normalizeName(h.SNI) {
			t.Fatalf("SNI %q not normalised", h.SNI)
		}
	})
}

// fuzzSeeds are real hellos from crypto/tls in the shapes the peek must
// handle; testdata/fuzz/FuzzPeekClientHello holds the same, checked in.
func fuzzSeeds() [][]byte {
	opts := []tlstest.HelloOptions{
		{ServerName: apiHost, NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: apiHost, MaxRecordPayload: 64},
		{ServerName: "github.com", NextProtos: []string{"http/1.1"}, MaxRecordPayload: 7},
		{},
		{ServerName: "registry.npmjs.org", PadProtos: 10},
	}
	var out [][]byte
	for _, o := range opts {
		out = append(out, tlstest.MustClientHello(o))
	}
	first := out[0]
	out = append(out, first[:len(first)/2], []byte("GET / HTTP/1.1\r\n\r\n"), []byte{22, 3, 1, 0, 0})
	return out
}

// TestFuzzCorpusIsCurrent regenerates testdata/fuzz/FuzzPeekClientHello
// from fuzzSeeds when CLAUDERON_UPDATE_FUZZ_CORPUS=1, and otherwise checks
// that the checked-in corpus exists.
func TestFuzzCorpusIsCurrent(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzPeekClientHello")
	if os.Getenv("CLAUDERON_UPDATE_FUZZ_CORPUS") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range fuzzSeeds() {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < len(fuzzSeeds()) {
		t.Fatalf("checked-in corpus %s has %d entries (err %v); run with CLAUDERON_UPDATE_FUZZ_CORPUS=1", dir, len(entries), err)
	}
}
