package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRelay_RefusalIsReadWholeWhileTheClientStillSends: a request the
// terminator refuses before reading its body (403) is answered and the
// connection closed; the client, still sending the body, must read the
// whole answer — not a reset that overtakes it (closing a socket with
// unread bytes makes the kernel send RST). Seen with curl in pods as
// "SSL_ERROR_SYSCALL" and "transferred a partial file".
func TestRelay_RefusalIsReadWholeWhileTheClientStillSends(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for i := range 5 {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: "forbidden.intercept.test", RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		const bodyLen = 256 << 10
		fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: forbidden.intercept.test\r\nContent-Length: %d\r\n\r\n", bodyLen)
		go func() { _, _ = c.Write([]byte(strings.Repeat("x", bodyLen))) }() // blocks once the server stops reading
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("attempt %d: reading the refusal: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "clauderon_forbidden") {
			t.Fatalf("attempt %d: status %d, body %q, err %v; want the whole 403", i, resp.StatusCode, b, err)
		}
		c.Close()
	}
}

// TestRelay_CurlReadsTheRefusalWhole runs the real curl (Debian's 7.88, as
// in agent images) against a refused request, over h2 and HTTP/1.1: it must
// exit 0 with the 403. A GOAWAY sent ahead of the 403 (Connection: close on
// h2) made curl report "(18) Transferred a partial file" for it.
func TestRelay_CurlReadsTheRefusalWhole(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is needed (apt-get install curl; scripts/test.sh installs it)")
	}
	h := newHarness(t, harnessOpts{})
	_, port, _ := net.SplitHostPort(h.addr)
	for _, proto := range []string{"--http2", "--http1.1"} {
		for i := range 10 {
			out, err := exec.Command(curl, "-sS", proto, "--cacert", filepath.Join(h.stateDir, "proxy-ca.pem"),
				"--resolve", "forbidden.intercept.test:"+port+":127.0.0.1", "https://forbidden.intercept.test:"+port+"/v1/messages",
				"-d", "{}", "-w", " status=%{http_code}").CombinedOutput()
			if err != nil || !strings.HasSuffix(string(out), " status=403") {
				t.Fatalf("%s attempt %d: %v\n%s", proto, i, err, out)
			}
		}
	}
}

// unknownIdentity knows no client; refuseUnknown refuses such a client as
// the appliance's injector does.
type unknownIdentity struct{}

func (unknownIdentity) Lookup(netip.Addr) (Client, bool) { return Client{}, false }

type refuseUnknown struct{ fakeInjector }

func (r refuseUnknown) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	if !c.Known {
		return "", false, fmt.Errorf("%w: not a known client", ErrForbidden)
	}
	return r.fakeInjector.Apply(req, host, c)
}

// TestIntercept_H2UnknownClientsRefusalSendsItAway: the identity is looked
// up per connection, so an h2 connection refused because its client was
// not known yet goes away (GOAWAY): the next request opens a new one and
// is looked up again. A policy 403 for a known client keeps the
// connection (TestRelay_CurlReadsTheRefusalWhole).
func TestIntercept_H2UnknownClientsRefusalSendsItAway(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.Identity, c.Injector = unknownIdentity{}, refuseUnknown{} }})
	var dials atomic.Int32
	tr := h.countingH2Transport(&dials)
	for i := range 2 {
		resp, err := (&http.Client{Transport: tr}).Get("https://" + apiHost + "/v1/messages")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.ProtoMajor != 2 {
			t.Fatalf("request %d: %s %d, want h2 403", i, resp.Proto, resp.StatusCode)
		}
		h.rec.next(t)
		time.Sleep(100 * time.Millisecond) // let the client read the GOAWAY
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d connections for two refused requests of an unknown client, want 2 (each goes away)", n)
	}
}
