package tlsmitm

// Benchmarks compare the proxy against direct TLS to the same upstream in
// the same run. Client, proxy and upstream share one process, so:
//
//   - ns/op is the time of the proxied leg only (the direct leg runs first,
//     outside the timer); the custom metrics carry the comparison;
//   - proxy-allocs/req and proxy-cpu-µs/req are (proxied − direct) / N:
//     process allocations (runtime.MemStats.Mallocs) and process CPU
//     (getrusage(RUSAGE_SELF) user+system) of the proxied leg minus the
//     direct leg, i.e. the proxy's own cost including its extra TLS
//     termination and origination, but not the client's or upstream's.
//
// What proxy-cpu-µs/req does and does not contain: it includes the kernel
// work of the two extra loopback hops (on loopback the sender's write(2)
// also runs the receiver's TCP input), and the scheduler, netpoll and GC
// work the proxy causes, as it would for any reverse proxy. It excludes
// client TLS handshakes (both legs are warmed before measuring and keep
// their connections), logging (the benchmark logger discards, and the
// success path logs nothing anyway) and the audit sink (countAuditor
// counts; the daemon's JSON-lines writer is appliance/audit's cost).
// BenchmarkKeepAliveStdlibFloor measures a bare ReverseProxy the same way,
// which separates net/http's share from tlsmitm's.
// In BenchmarkNewConn the direct leg's server handshake (the upstream's)
// has no counterpart in the proxied leg, whose upstream connection is
// pooled: there proxy-cpu-µs/req is the extra CPU of a new connection
// through the proxy compared with going direct, i.e. the proxy's cost
// minus one server handshake, not the proxy's absolute cost.
//
// The harness runs Serve under the pprof label side=proxy (inherited by every
// goroutine the server starts), so a CPU profile isolates the proxy:
//
//	go test -run '^$' -bench 'KeepAlive$/http1.1' -benchtime 10000x -cpuprofile cpu.out ./tlsmitm/
//	go tool pprof -top -tagfocus=side=proxy cpu.out
//
// Run (2 cores shared with other work: use several counts):
//
//	go test -run '^$' -bench 'KeepAlive|NewConn' -benchtime 2000x -count 3 ./tlsmitm/
//	go test -run '^$' -bench 'SSE' -benchtime 5x -count 3 ./tlsmitm/
//	go test -run '^$' -bench 'Download100MB' -benchtime 6x -count 3 ./tlsmitm/

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

// benchEnv is a proxy with an upstream serving /small, /sse and /big.
type benchEnv struct {
	h *harness
}

var bigBody = make([]byte, 1<<20)

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_01","type":"message","content":[{"type":"text","text":"ok"}]}`)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		sseHandler(n, 2*time.Millisecond)(w, r)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		w.Header().Set("Content-Length", strconv.Itoa(mb<<20))
		for i := 0; i < mb; i++ {
			if _, err := w.Write(bigBody); err != nil {
				return
			}
		}
	})
	h := newHarness(b, harnessOpts{handler: mux, mutate: func(c *Config) {
		c.Logger = nil              // no per-request log lines in benchmarks
		c.Auditor = &countAuditor{} // the Event is built; nothing is kept
	}})
	return &benchEnv{h: h}
}

// client returns a client to the proxy (proxied) or straight to the
// upstream (direct), for api.anthropic.com either way.
func (e *benchEnv) client(proxied, h2, keepAlive bool) *http.Client {
	target, pool := e.h.up.Addr(), e.h.up.CA.Pool()
	if proxied {
		target, pool = e.h.addr, e.h.pool
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", target)
		},
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:   h2,
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 64,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	e.h.clients = append(e.h.clients, tr)
	return &http.Client{Transport: tr}
}

func get(b *testing.B, c *http.Client, path string) {
	resp, err := c.Get("https://" + apiHost + path)
	drainOK(b, resp, err)
}

// post sends body as JSON to /small and checks the answer.
func post(b *testing.B, c *http.Client, body []byte) {
	resp, err := c.Post("https://"+apiHost+"/small", "application/json", bytes.NewReader(body))
	drainOK(b, resp, err)
}

// drainOK reads and closes a response that must be a 200.
func drainOK(b *testing.B, resp *http.Response, err error) {
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// usage is process CPU time and allocation count.
type usage struct {
	cpu    time.Duration
	allocs uint64
	wall   time.Time
}

func snap() usage {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		allocs: ms.Mallocs,
		wall:   time.Now(),
	}
}

type legResult struct {
	perSec float64
	cpu    time.Duration // per op
	allocs float64       // per op
}

// legAcc accumulates one leg's measurements over interleaved chunks.
type legAcc struct {
	n      int
	wall   time.Duration
	cpu    time.Duration
	allocs uint64
}

func (a *legAcc) run(n int, op func()) {
	u0 := snap()
	for i := 0; i < n; i++ {
		op()
	}
	u1 := snap()
	a.n += n
	a.wall += u1.wall.Sub(u0.wall)
	a.cpu += u1.cpu - u0.cpu
	a.allocs += u1.allocs - u0.allocs
}

func (a *legAcc) result() legResult {
	return legResult{
		perSec: float64(a.n) / a.wall.Seconds(),
		cpu:    a.cpu / time.Duration(a.n),
		allocs: float64(a.allocs) / float64(a.n),
	}
}

// interleave runs direct and proxied n times each, alternating in chunks so
// that background load on a shared machine hits both legs alike.
func interleave(b *testing.B, n int, direct, proxied func()) (d, p legResult) {
	direct() // warm: connections, leaf, upstream pool
	proxied()
	runtime.GC()
	chunk := max(1, min(50, n/10))
	var da, pa legAcc
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		da.run(k, direct)
		b.StartTimer()
		pa.run(k, proxied)
		b.StopTimer()
	}
	return da.result(), pa.result()
}

// compare runs both legs (only the proxied one under the timer) and
// reports the metrics.
func compare(b *testing.B, unit string, direct, proxied func()) {
	b.StopTimer()
	d, p := interleave(b, b.N, direct, proxied)
	b.ReportMetric(d.perSec, "direct-"+unit)
	b.ReportMetric(p.perSec, "proxied-"+unit)
	b.ReportMetric(p.perSec/d.perSec, "ratio")
	b.ReportMetric(float64(d.cpu)/float64(time.Microsecond), "direct-cpu-µs/req")
	b.ReportMetric(float64(p.cpu-d.cpu)/float64(time.Microsecond), "proxy-cpu-µs/req")
	b.ReportMetric(p.allocs-d.allocs, "proxy-allocs/req")
}

// BenchmarkKeepAlive: sequential requests on one kept-alive connection.
// Target: proxied ≥ 0.7× direct, ≤ 25 µs proxy CPU per request.
func BenchmarkKeepAlive(b *testing.B) {
	e := newBenchEnv(b)
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(b *testing.B) {
			dc, pc := e.client(false, h2, true), e.client(true, h2, true)
			compare(b, "req/s", func() { get(b, dc, "/small") }, func() { get(b, pc, "/small") })
		})
	}
}

// BenchmarkKeepAlivePost: what an agent sends on a warm connection, a
// JSON body (4 KiB here: a short turn) answered by a small response. Its
// request body streams on a worker of its own (sendBody, workers.go).
func BenchmarkKeepAlivePost(b *testing.B) {
	e := newBenchEnv(b)
	body := bytes.Repeat([]byte(`{"role":"user","content":"0123456789abcdef"},`), 4096/45)
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(b *testing.B) {
			dc, pc := e.client(false, h2, true), e.client(true, h2, true)
			compare(b, "req/s", func() { post(b, dc, body) }, func() { post(b, pc, body) })
		})
	}
}

// BenchmarkKeepAliveStdlibFloor is the yardstick for BenchmarkKeepAlive's
// http1.1 leg: a bare httputil.ReverseProxy behind http.Server, with the
// same TLS on both sides, the same Transport and copy buffers, but no routing,
// Host check, injection, audit or write deadlines. Its proxy-cpu-µs/req is
// what net/http plus ReverseProxy cost on this machine before any of
// tlsmitm's work; the difference to BenchmarkKeepAlive is tlsmitm's own.
func BenchmarkKeepAliveStdlibFloor(b *testing.B) {
	e := newBenchEnv(b)
	addr := startStdlibProxy(b, e.h.up)
	dc := e.client(false, false, true)
	pc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: e.h.up.CA.Pool()},
		MaxIdleConnsPerHost: 64,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	b.Cleanup(pc.CloseIdleConnections)
	compare(b, "req/s", func() { get(b, dc, "/small") }, func() { get(b, pc, "/small") })
}

// startStdlibProxy serves a plain HTTP/1.1 ReverseProxy to up on loopback,
// under the pprof label side=proxy, until the benchmark ends.
func startStdlibProxy(b *testing.B, up *tlstest.Upstream) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", up.Addr())
		},
		TLSClientConfig:     &tls.Config{RootCAs: up.CA.Pool()},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
		ReadBufferSize:      32 << 10,
		WriteBufferSize:     32 << 10,
	}
	rp := &httputil.ReverseProxy{Transport: tr, BufferPool: bufferPool{}, Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "https", apiHost, ""
	}}
	leaf := up.CA.Leaf(b, apiHost)
	srv := &http.Server{Handler: rp, TLSConfig: &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"http/1.1"}}}
	done := make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("side", "proxy"), func(context.Context) {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	})
	b.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
		<-done
	})
	return ln.Addr().String()
}

// BenchmarkKeepAliveParallel: 8 clients in parallel, each kept alive.
func BenchmarkKeepAliveParallel(b *testing.B) {
	e := newBenchEnv(b)
	const workers = 8
	dc, pc := e.client(false, false, true), e.client(true, false, true)
	par := func(c *http.Client) func() {
		return func() {
			done := make(chan struct{}, workers)
			for w := 0; w < workers; w++ {
				go func() { get(b, c, "/small"); done <- struct{}{} }()
			}
			for w := 0; w < workers; w++ {
				<-done
			}
		}
	}
	compare(b, "batch/s", par(dc), par(pc))
}

// BenchmarkNewConn: a new TLS connection per request (leaf cached,
// upstream pooled). Target: proxied ≥ 0.8× direct.
func BenchmarkNewConn(b *testing.B) {
	e := newBenchEnv(b)
	dc, pc := e.client(false, false, false), e.client(true, false, false)
	compare(b, "conn/s", func() { get(b, dc, "/small") }, func() { get(b, pc, "/small") })
}

// BenchmarkDownload100MB: one 100 MB response. Target: proxied ≥ 0.5×
// direct throughput.
func BenchmarkDownload100MB(b *testing.B) {
	e := newBenchEnv(b)
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(b *testing.B) {
			dc, pc := e.client(false, h2, true), e.client(true, h2, true)
			b.StopTimer()
			d, p := interleave(b, b.N, func() { get(b, dc, "/big?mb=100") }, func() { get(b, pc, "/big?mb=100") })
			b.ReportMetric(100*d.perSec, "direct-MB/s")
			b.ReportMetric(100*p.perSec, "proxied-MB/s")
			b.ReportMetric(p.perSec/d.perSec, "ratio")
		})
	}
}

// BenchmarkUpload1MB: a 1 MB request body, the size of a long agent
// conversation sent with every turn. Target: proxied ≥ 0.5× direct.
func BenchmarkUpload1MB(b *testing.B) {
	e := newBenchEnv(b)
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(b *testing.B) {
			dc, pc := e.client(false, h2, true), e.client(true, h2, true)
			b.StopTimer()
			d, p := interleave(b, b.N, func() { post(b, dc, bigBody) }, func() { post(b, pc, bigBody) })
			b.ReportMetric(d.perSec, "direct-MB/s")
			b.ReportMetric(p.perSec, "proxied-MB/s")
			b.ReportMetric(p.perSec/d.perSec, "ratio")
		})
	}
}

// BenchmarkSSEAddedDelay: 100 events 2 ms apart; per-event delay from
// emission (upstream) to receipt (client), proxied minus direct. Target:
// added mean < 0.1 ms, proxied worst < 0.5 ms above direct worst.
func BenchmarkSSEAddedDelay(b *testing.B) {
	e := newBenchEnv(b)
	const n = 100
	dc, pc := e.client(false, false, true), e.client(true, false, true)
	stats := func(c *http.Client) (mean, worst time.Duration) {
		var sum time.Duration
		for i := 0; i < b.N; i++ {
			resp, err := c.Get("https://" + apiHost + "/sse?n=" + strconv.Itoa(n))
			if err != nil {
				b.Fatal(err)
			}
			for _, d := range readSSE(b, resp.Body, n) {
				sum += d
				worst = max(worst, d)
			}
			resp.Body.Close()
		}
		return sum / time.Duration(b.N*n), worst
	}
	b.StopTimer()
	dMean, dWorst := stats(dc)
	b.StartTimer()
	pMean, pWorst := stats(pc)
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(dMean), "direct-mean-µs")
	b.ReportMetric(us(pMean), "proxied-mean-µs")
	b.ReportMetric(us(pMean-dMean), "added-mean-µs")
	b.ReportMetric(us(dWorst), "direct-max-µs")
	b.ReportMetric(us(pWorst), "proxied-max-µs")
}

// countAuditor counts events (benchmarks must not accumulate them).
type countAuditor struct{ n atomic.Int64 }

func (a *countAuditor) Record(Event) { a.n.Add(1) }
