package kubepods

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service
// account token and the cluster CA.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

const (
	maxTokenBytes  = 64 << 10 // a projected token is a few KiB
	maxStatusBytes = 64 << 10 // an error body from the API server
	userAgent      = "clauderond-kubepods"
	rbacAdvice     = "the service account needs get/list/watch on pods (ClusterRole in scripts/kubernetes)"
)

// Client reads pods from the Kubernetes API server. It holds the server's
// base URL, the file of the bearer token (read again for every request:
// projected service account tokens rotate) and an *http.Client that trusts
// the cluster CA.
type Client struct {
	base      *url.URL
	tokenFile string // "" sends no Authorization header
	hc        *http.Client
}

// InCluster returns a Client for the API server of the cluster the daemon
// runs in, from KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and the
// service account mounted at DefaultServiceAccountDir.
func InCluster() (*Client, error) {
	return inCluster(os.Getenv, DefaultServiceAccountDir)
}

func inCluster(getenv func(string) string, saDir string) (*Client, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	var missing []string
	if host == "" {
		missing = append(missing, "KUBERNETES_SERVICE_HOST")
	}
	if port == "" {
		missing = append(missing, "KUBERNETES_SERVICE_PORT")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("not running in a Kubernetes pod: %s not set (outside a cluster, give the API server, token and CA explicitly)",
			strings.Join(missing, " and "))
	}
	tokenFile := filepath.Join(saDir, "token")
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("service account token: %w (is automountServiceAccountToken false on the pod?)", err)
	}
	return NewClient("https://"+net.JoinHostPort(host, port), tokenFile, filepath.Join(saDir, "ca.crt"))
}

// NewClient returns a Client for server ("https://host:port"), sending the
// token read from tokenFile and trusting only the CA certificates in
// caFile. An empty caFile trusts the system roots; an empty tokenFile sends
// no token.
func NewClient(server, tokenFile, caFile string) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubernetes API server %q: want https://host:port", server)
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the cluster CA: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster CA %s holds no PEM certificate", caFile)
		}
	}
	if tokenFile != "" {
		if _, err := readToken(tokenFile); err != nil {
			return nil, err
		}
	}
	tr := &http.Transport{
		// No proxy from the environment: the API server is reached directly.
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Client{base: u, tokenFile: tokenFile, hc: &http.Client{Transport: tr}}, nil
}

// NewClientForTest returns a Client that sends no token through hc (nil
// means http.DefaultClient), for a fake API server such as httptest's.
func NewClientForTest(server string, hc *http.Client) *Client {
	u, err := url.Parse(server)
	if err != nil {
		panic(fmt.Sprintf("kubepods.NewClientForTest(%q): %v", server, err))
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, hc: hc}
}

func readToken(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("reading the service account token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading the service account token: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("service account token %s is larger than %d bytes", file, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("service account token %s is empty or not one line", file)
	}
	return tok, nil
}

// APIError is an error answer from the API server. Its message says what
// the operator can do about it.
type APIError struct {
	Code    int    // HTTP status, or the Status object's code in a watch
	Reason  string // Status.reason, e.g. "Forbidden", "Expired"
	Message string // Status.message
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Reason
	}
	var advice string
	switch e.Code {
	case http.StatusUnauthorized:
		advice = "; the API server rejected the token: check the service account token (an expired or foreign token?)"
	case http.StatusForbidden:
		advice = "; " + rbacAdvice
	case http.StatusGone:
		advice = "; the resource version is too old, relisting"
	}
	return fmt.Sprintf("kubernetes API: %d %s%s", e.Code, msg, advice)
}

// errGone: the watch's resource version is too old; relist.
func isGone(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == http.StatusGone
}

// status is the API server's Status object (error answers, watch ERROR).
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}

// get sends GET base+path?query and returns the response when it is 200.
func (c *Client) get(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if c.tokenFile != "" {
		tok, err := readToken(c.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, statusError(resp)
}

// statusError turns a non-200 answer into an *APIError, with the Status
// object's message when the body holds one.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes))
	e := &APIError{Code: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	var s status
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" {
		e.Reason, e.Message = s.Reason, s.Message
	} else if t := string(bytes.TrimSpace(body)); t != "" && len(t) < 200 {
		e.Message = t
	}
	return e
}

// cappedReader fails once more than n bytes have been read through it.
type cappedReader struct {
	r    io.Reader
	n    int64
	what string
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, fmt.Errorf("%s is larger than the limit", c.what)
	}
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return n, fmt.Errorf("%s is larger than the limit", c.what)
	}
	return n, err
}
