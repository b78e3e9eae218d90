package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// httpResult is what httpsget prints with -json.
type httpResult struct {
	Status  int               `json:"status"`
	Proto   string            `json:"proto,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body"`
	Error   string            `json:"error,omitempty"`
}

// parseURLCommand adds the repeatable -H header flag to fs, parses args and
// returns the headers and the one URL argument; ok is false (after a usage
// line on stderr) when there is not exactly one.
func parseURLCommand(fs *flag.FlagSet, args []string) (url string, headers headerFlags, ok bool) {
	fs.Var(&headers, "H", "header 'Name: value' (repeatable)")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "%s: need exactly one URL\n", fs.Name())
		return "", nil, false
	}
	return fs.Arg(0), headers, true
}

// httpsGet performs one request. The trust store is the system one, which
// Go reads from SSL_CERT_FILE / SSL_CERT_DIR / the usual bundle paths.
func httpsGet(args []string) int {
	fs := flag.NewFlagSet("httpsget", flag.ExitOnError)
	method := fs.String("X", "GET", "HTTP method")
	data := fs.String("d", "", "request body")
	connect := fs.String("connect", "", "dial this ip:port instead of resolving the URL's host (SNI stays the host)")
	timeout := fs.Duration("timeout", 15*time.Second, "overall timeout")
	asJSON := fs.Bool("json", false, "print a JSON result instead of status + body")
	h2 := fs.Bool("h2", false, "allow HTTP/2")
	url, headers, ok := parseURLCommand(fs, args)
	if !ok {
		return 2
	}
	res := doRequest(url, *method, *data, *connect, headers, *timeout, *h2)
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(res)
	} else if res.Error != "" {
		fmt.Fprintln(os.Stderr, "httpsget:", res.Error)
	} else {
		fmt.Printf("HTTP %d\n%s\n", res.Status, res.Body)
	}
	if res.Error != "" {
		return 1
	}
	if res.Status >= 400 {
		return 22 // like curl -f
	}
	return 0
}

func doRequest(url, method, data, connect string, headers []string, timeout time.Duration, h2 bool) httpResult {
	c := newClient(connect, true, timeout)
	if h2 {
		c.Transport.(*http.Transport).TLSNextProto = nil
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	}
	return roundTrip(c, url, method, data, headers)
}

// newClient returns an HTTP/1.1 client trusting the system roots
// (SSL_CERT_FILE), optionally dialling connect instead of the URL's host.
func newClient(connect string, keepAlive bool, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if connect != "" {
				addr = connect
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

func roundTrip(client *http.Client, url, method, data string, headers []string) httpResult {
	var body io.Reader
	if data != "" {
		body = strings.NewReader(data)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return httpResult{Error: err.Error()}
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return httpResult{Error: "bad header " + h}
		}
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if data != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return httpResult{Error: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res := httpResult{Status: resp.StatusCode, Proto: resp.Proto, Body: string(b), Headers: map[string]string{}}
	for k := range resp.Header {
		res.Headers[k] = resp.Header.Get(k)
	}
	if err != nil {
		res.Error = "reading body: " + err.Error()
	}
	return res
}

// latency makes n sequential requests and prints a JSON summary of the
// per-request latency (keep-alive unless -new-conn).
func latency(args []string) int {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	n := fs.Int("n", 100, "requests")
	newConn := fs.Bool("new-conn", false, "a new TCP+TLS connection per request")
	method := fs.String("X", "POST", "HTTP method")
	data := fs.String("d", `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, "request body")
	connect := fs.String("connect", "", "dial this ip:port instead of resolving the URL's host")
	url, headers, ok := parseURLCommand(fs, args)
	if !ok {
		return 2
	}
	c := newClient(*connect, !*newConn, 15*time.Second)
	var ds []time.Duration
	errs, firstErr := 0, ""
	for range *n {
		start := time.Now()
		res := roundTrip(c, url, *method, *data, headers)
		if res.Error != "" || res.Status != http.StatusOK {
			if errs++; firstErr == "" {
				firstErr = fmt.Sprintf("status %d: %s", res.Status, res.Error)
			}
			continue
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"n": len(ds), "errors": errs, "first_error": firstErr,
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1)})
	if errs > 0 {
		return 1
	}
	return 0
}
