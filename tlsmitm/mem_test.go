package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestIdleConnMemory holds 1000 idle intercepted keep-alive connections and
// reports the proxy's heap and RSS growth per connection (target ≤ 64 KiB).
// The clients live in a child process (this test binary re-executed), so
// only the proxy's side of each connection is measured; the upstream sees
// one pooled connection. Gated: CLAUDERON_BENCH_MEM=1.
//
//	CLAUDERON_BENCH_MEM=1 go test -run TestIdleConnMemory -v ./tlsmitm/
func TestIdleConnMemory(t *testing.T) {
	if os.Getenv("CLAUDERON_BENCH_MEM") != "1" {
		t.Skip("set CLAUDERON_BENCH_MEM=1 to measure idle connection memory")
	}
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) { idleConnMemory(t, proto) })
	}
}

func idleConnMemory(t *testing.T, proto string) {
	const n = 1000
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		// Every client is 127.0.0.1. The test recorder keeps every audit
		// event; the daemon's auditor writes them out and keeps none.
		mutate: func(c *Config) { c.Logger, c.MaxConnsPerSource, c.Auditor = nil, 2*n, &countAuditor{} }})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, h.srv.CA().CertPEM(), 0o644)
	// Warm up: the leaf, the upstream connection, the HTTP server.
	resp, err := h.client(proto == "h2").Get("https://" + apiHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, tr := range h.clients {
		tr.CloseIdleConnections()
	}
	heap0, stack0, rss0, g0 := memNow()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CLAUDERON_IDLE_CLIENT="+h.addr, "CLAUDERON_IDLE_CA="+caFile, "CLAUDERON_IDLE_N="+strconv.Itoa(n), "CLAUDERON_IDLE_PROTO="+proto)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("child: %q, %v", line, err)
	}
	time.Sleep(h.srv.cfg.ParkAfter + 300*time.Millisecond) // the connections park (park.go)
	heap1, stack1, rss1, g1 := memNow()
	if parked := h.srv.Stats().ParkedConns; parked != n {
		t.Errorf("%d of %d idle connections parked after %v", parked, n, h.srv.cfg.ParkAfter)
	}
	perHeap := float64(heap1-heap0) / n
	perRSS := float64(rss1-rss0) / n
	time.Sleep(time.Second) // the runtime gives pages freed since back to the kernel
	_, _, rss2, _ := memNow()
	t.Logf("%d idle intercepted %s keep-alive connections: heap +%.1f KiB/conn (of it goroutine stacks +%.1f), RSS +%.1f KiB/conn (+%.1f a second later), goroutines +%.2f/conn",
		n, proto, perHeap/1024, float64(stack1-stack0)/n/1024, perRSS/1024, float64(rss2-rss0)/n/1024, float64(g1-g0)/n)
	if perHeap > 64<<10 {
		t.Errorf("heap growth %.1f KiB per idle connection, target ≤ 64 KiB", perHeap/1024)
	}
}

// memNow returns the heap in use (goroutine stacks included), the stacks
// alone, the process's RSS and its goroutines, after two collections.
func memNow() (heap, stacks, rss int64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/statm")
	f := strings.Fields(string(b))
	if len(f) > 1 {
		pages, _ := strconv.ParseInt(f[1], 10, 64)
		rss = pages * int64(os.Getpagesize())
	}
	return int64(ms.HeapInuse + ms.StackInuse), int64(ms.StackInuse), rss, runtime.NumGoroutine()
}

// idleClientMain is the child side of TestIdleConnMemory (see TestMain).
func idleClientMain() {
	addr, caFile := os.Getenv("CLAUDERON_IDLE_CLIENT"), os.Getenv("CLAUDERON_IDLE_CA")
	n, _ := strconv.Atoi(os.Getenv("CLAUDERON_IDLE_N"))
	pem, err := os.ReadFile(caFile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	proto := os.Getenv("CLAUDERON_IDLE_PROTO")
	conns := make([]net.Conn, 0, n)
	var h2conns []*http2.ClientConn // kept open, idle, after one request each
	for i := 0; i < n; i++ {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: apiHost, RootCAs: pool, NextProtos: []string{proto}})
		if err != nil {
			panic(err)
		}
		conns = append(conns, c)
		if proto == "h2" {
			cc, err := (&http2.Transport{}).NewClientConn(c)
			if err != nil {
				panic(err)
			}
			req, _ := http.NewRequest("GET", "https://"+apiHost+"/", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				panic(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			h2conns = append(h2conns, cc)
			continue
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", apiHost)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
