package appliance

import (
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/ratelog"
)

// TestRun_ClientCausedLinesAreRateLimited: a container that floods the DNS
// shim with garbage and the terminator with refused names costs the log at
// most a burst per part (the parts' budgets are their own: one part's flood
// does not hide the other's lines), the next line says how many were
// dropped, and the daemon's own lines are never dropped.
func TestRun_ClientCausedLinesAreRateLimited(t *testing.T) {
	logs := &syncBuf{} // honeytoken_test.go's
	r := startFakeLogging(t, logs)
	start := time.Now()
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.cfg.Listen.DNSPort))
	u, err := net.Dial("udp", dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const each = 3 * ratelog.DefaultBurst
	for range each {
		// A query header (one question) over a cut name: past the shim's
		// header screen, then "unparsable dns message", one line each.
		u.Write([]byte("\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab"))
	}
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.cfg.Listen.TLSPort))
	refused := func() {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "not-routed.example", InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
	}
	for range each {
		refused() // "refused connection", per connection
	}
	time.Sleep(200 * time.Millisecond) // the shim reads its socket on its own goroutine; the budget refills a little
	elapsed := time.Since(start)
	refused() // its line says how many were dropped before it
	time.Sleep(50 * time.Millisecond)

	var dnsLines, tlsLines int
	var last string
	for _, l := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(l, "unparsable dns message"):
			dnsLines++
		case strings.Contains(l, "refused connection"):
			tlsLines++
			last = l
		}
	}
	budget := ratelog.DefaultBurst + int(elapsed.Seconds()*ratelog.DefaultPerSecond) + 2
	for part, n := range map[string]int{"dns": dnsLines, "tls": tlsLines} {
		if n > budget {
			t.Errorf("%d %s client lines from %d events in %v, want at most %d", n, part, each, elapsed, budget)
		}
		if n < ratelog.DefaultBurst {
			t.Errorf("%d %s client lines, want at least a burst (%d): the other part's flood must not spend this one's budget", n, part, ratelog.DefaultBurst)
		}
	}
	if !strings.Contains(last, ratelog.SuppressedKey+"=") {
		t.Errorf("the line after the floods = %q, want it to carry the %s count", last, ratelog.SuppressedKey)
	}
	if !strings.Contains(logs.String(), "dns server listening") {
		t.Error("the shim's lifecycle line is missing")
	}
	r.status(t) // the daemon still answers
}
