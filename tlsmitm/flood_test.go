package tlsmitm

// The memory attack from the review: one container opens every connection
// it may hold, fills each with h2 streams, and either stalls every upload
// or never opens its flow-control window while the upstream streams a large
// answer. The proxy's heap must stay within a stated bound, and another
// source must still be served. The attacker is a child process (this test
// binary re-executed, see TestMain), so only the daemon's side (proxy and
// the test upstream) is in the heap measured.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// floodHeapBound is the heap growth one source may cause.
const floodHeapBound = 64 << 20

func TestAttack_OneSourceCannotExhaustMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns an attacker process")
	}
	for _, mode := range []string{"upload", "noread"} {
		t.Run(mode, func(t *testing.T) { runFlood(t, mode) })
	}
}

func runFlood(t *testing.T, mode string) {
	var upBytes atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/flood" {
			io.WriteString(w, "ok")
			return
		}
		if mode == "upload" { // an API reads the body before answering
			io.Copy(io.Discard, r.Body)
			return
		}
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for i := 0; i < 256; i++ { // 8 MiB, far beyond every window
			n, err := w.Write(chunk)
			upBytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	h := newHarness(t, harnessOpts{handler: handler, mutate: func(c *Config) {
		c.Logger, c.Auditor = nil, &countAuditor{} // keep test-side records out of the heap
	}})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, h.srv.CA().CertPEM(), 0o644)
	other := h.clientFrom(t, true, "127.0.0.2")
	getOK(t, other) // warm up: leaf, upstream connection, HTTP server
	heap0, _, _, _ := memNow()

	conns, streams := DefaultMaxConnsPerSource, h2MaxStreams
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CLAUDERON_FLOOD_ADDR="+h.addr, "CLAUDERON_FLOOD_CA="+caFile,
		"CLAUDERON_FLOOD_MODE="+mode, "CLAUDERON_FLOOD_CONNS="+strconv.Itoa(conns), "CLAUDERON_FLOOD_STREAMS="+strconv.Itoa(streams))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("attacker: %q, %v", line, err)
	}
	// Every stream is either refused (503) or admitted and stuck.
	total := int64(conns * streams)
	cap := int64(DefaultMaxRequestsPerSource)
	waitFor(t, 20*time.Second, "all streams refused or admitted", func() bool {
		st := h.srv.Stats()
		return st.RefusedRequests >= total-cap && st.ActiveRequests == cap
	})
	if mode == "noread" { // the upstream fills every window it is given
		waitStable(t, &upBytes)
	}
	heap1, _, _, _ := memNow()
	if f := os.Getenv("CLAUDERON_FLOOD_HEAPPROF"); f != "" {
		pf, _ := os.Create(f + "." + mode)
		pprof.Lookup("heap").WriteTo(pf, 0)
		pf.Close()
	}
	st := h.srv.Stats()
	grow := heap1 - heap0
	t.Logf("%s: %d conns × %d streams from one source: %d admitted, %d refused; heap +%.1f MiB (%.1f KiB per admitted request), upstream sent %.1f MiB",
		mode, conns, streams, st.ActiveRequests, st.RefusedRequests, float64(grow)/(1<<20), float64(grow)/float64(cap)/1024, float64(upBytes.Load())/(1<<20))
	if grow > floodHeapBound && !raceEnabled {
		t.Errorf("heap grew %.1f MiB under one source's flood, bound %d MiB", float64(grow)/(1<<20), floodHeapBound>>20)
	}
	// Another source is still served, over both protocols.
	getOK(t, other)
	getOK(t, h.clientFrom(t, false, "127.0.0.2"))
	stdin.Close()
	waitFor(t, 20*time.Second, "attacker's requests gone", func() bool { return h.srv.Stats().ActiveRequests == 0 })
}

// clientFrom is h.client with connections from local address ip (another
// source than 127.0.0.1).
func (h *harness) clientFrom(t *testing.T, h2 bool, ip string) *http.Client {
	c := h.client(h2)
	tr := c.Transport.(*http.Transport)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", h.addr)
	}
	return c
}

func getOK(t *testing.T, c *http.Client) {
	t.Helper()
	resp, err := c.Get("https://" + apiHost + "/")
	if err != nil {
		t.Fatalf("request from another source: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("request from another source: %s", resp.Status)
	}
}

// waitStable waits until n has not moved for half a second (the upstream
// has filled every window it has).
func waitStable(t *testing.T, n *atomic.Int64) {
	t.Helper()
	last, since := n.Load(), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			return
		}
	}
	t.Fatal("upstream never stopped sending")
}

// floodMain is the attacker (the child side of
// TestAttack_OneSourceCannotExhaustMemory): raw h2 frames, so it controls
// its flow-control windows and stalls exactly as an attacker would.
func floodMain() {
	addr, mode := os.Getenv("CLAUDERON_FLOOD_ADDR"), os.Getenv("CLAUDERON_FLOOD_MODE")
	conns, _ := strconv.Atoi(os.Getenv("CLAUDERON_FLOOD_CONNS"))
	streams, _ := strconv.Atoi(os.Getenv("CLAUDERON_FLOOD_STREAMS"))
	pem, err := os.ReadFile(os.Getenv("CLAUDERON_FLOOD_CA"))
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	var open []net.Conn
	for i := 0; i < conns; i++ {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: apiHost, RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			panic(fmt.Sprintf("conn %d: %v", i, err))
		}
		floodConn(c, mode, streams)
		open = append(open, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range open {
		c.Close()
	}
}

func floodConn(c net.Conn, mode string, streams int) {
	var mu sync.Mutex
	fr := http2.NewFramer(c, c)
	io.WriteString(c, http2.ClientPreface)
	window := uint32(65535)
	if mode == "noread" {
		window = 0 // never let the server send a DATA byte
	}
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i := 0; i < streams; i++ {
		hbuf.Reset()
		method := "POST"
		if mode == "noread" {
			method = "GET"
		}
		for _, f := range [][2]string{{":method", method}, {":scheme", "https"}, {":authority", apiHost}, {":path", "/flood"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if mode == "upload" {
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "100000000"})
		}
		id := uint32(2*i + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: mode == "noread"})
		if mode == "upload" {
			fr.WriteData(id, false, make([]byte, 1024)) // then nothing, ever
		}
	}
	go floodRead(fr, &mu)
}

// floodRead answers SETTINGS and PING (a dead-looking peer would be cut for
// the wrong reason) and ignores everything else.
func floodRead(fr *http2.Framer, mu *sync.Mutex) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
		mu.Unlock()
	}
}
