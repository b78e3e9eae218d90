// Command client is the in-container test client of the appliance's root
// integration tests: it resolves a name through a DNS server (any address:
// port 53 is redirected to the daemon's shim), fetches an HTTPS URL trusting
// a CA file, and prints one line "status=<code> body=<body>".
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	url := flag.String("url", "https://api.anthropic.com/v1/messages", "URL to fetch")
	dnsAddr := flag.String("dns", "192.0.2.53:53", "DNS server (redirected to the shim)")
	caFile := flag.String("ca", "/ca.pem", "CA bundle to trust")
	auth := flag.String("auth", "Bearer sk-ant-oat01-clauderon-proxy-placeholder", "Authorization header to send")
	flag.Parse()
	if err := run(*url, *dnsAddr, *caFile, *auth); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func run(url, dnsAddr, caFile, auth string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, dnsAddr)
	}}
	dialer := &net.Dialer{Timeout: 10 * time.Second, Resolver: res}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:     dialer.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("status=%d body=%s\n", resp.StatusCode, body)
	return nil
}
