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
	var headers headerFlags
	fs.Var(&headers, "H", "header 'Name: value' (repeatable)")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "httpsget: need exactly one URL")
		return 2
	}
	res := doRequest(fs.Arg(0), *method, *data, *connect, headers, *timeout, *h2)
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
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if connect != "" {
				addr = connect
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: tr, Timeout: timeout}
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
