package kubepods

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsAPI is a TLS fake API server that records Authorization headers and
// answers every list with an empty PodList.
type tlsAPI struct {
	srv   *httptest.Server
	mu    sync.Mutex
	auths []string
}

func newTLSAPI(t *testing.T) *tlsAPI {
	t.Helper()
	a := &tlsAPI{}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auths = append(a.auths, r.Header.Get("Authorization"))
		a.mu.Unlock()
		w.Write([]byte(`{"kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}`))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// serviceAccountDir writes token and the server's CA as Kubernetes mounts them.
func serviceAccountDir(t *testing.T, srv *httptest.Server, token string) string {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	writeFile(t, filepath.Join(dir, "ca.crt"), string(ca))
	writeFile(t, filepath.Join(dir, "token"), token)
	return dir
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInCluster_TokenIsReadAgainForEveryRequest(t *testing.T) {
	a := newTLSAPI(t)
	dir := serviceAccountDir(t, a.srv, "token-one\n")
	host, port, _ := net.SplitHostPort(a.srv.Listener.Addr().String())
	env := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
	c, err := inCluster(func(k string) string { return env[k] }, dir)
	if err != nil {
		t.Fatal(err)
	}
	get := func() {
		t.Helper()
		resp, err := c.get(context.Background(), "/api/v1/pods", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	writeFile(t, filepath.Join(dir, "token"), "token-two") // the kubelet rotated it
	get()
	a.mu.Lock()
	defer a.mu.Unlock()
	if want := []string{"Bearer token-one", "Bearer token-two"}; strings.Join(a.auths, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers = %q, want %q", a.auths, want)
	}
}

func TestInCluster_NamesWhatIsMissing(t *testing.T) {
	a := newTLSAPI(t)
	full := serviceAccountDir(t, a.srv, "tok")
	noToken := t.TempDir()
	badCA := serviceAccountDir(t, a.srv, "tok")
	writeFile(t, filepath.Join(badCA, "ca.crt"), "not a certificate")
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		dir  string
		want string
	}{
		{"no_env", nil, full, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT not set"},
		{"no_port", map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, full, "KUBERNETES_SERVICE_PORT not set"},
		{"no_token", env, noToken, "automountServiceAccountToken"},
		{"bad_ca", env, badCA, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inCluster(func(k string) string { return tc.env[k] }, tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("inCluster = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewClient_Refuses(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, " \n")
	for _, tc := range []struct {
		name, server, token, ca, want string
	}{
		{"plain_http", "http://10.0.0.1:6443", "", "", "want https://host:port"},
		{"no_host", "https://", "", "", "want https://host:port"},
		{"missing_ca", "https://10.0.0.1:6443", "", filepath.Join(dir, "nope"), "reading the cluster CA"},
		{"missing_token", "https://10.0.0.1:6443", filepath.Join(dir, "nope"), "", "reading the service account token"},
		{"empty_token", "https://10.0.0.1:6443", empty, "", "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(tc.server, tc.token, tc.ca)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewClient = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewClient_TrustsOnlyTheGivenCA(t *testing.T) {
	a := newTLSAPI(t)
	dir := serviceAccountDir(t, a.srv, "tok")
	writeFile(t, filepath.Join(dir, "ca.crt"), selfSignedPEM(t)) // another CA
	c, err := NewClient(a.srv.URL, filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.get(context.Background(), "/api/v1/pods", nil)
	if err == nil {
		t.Fatal("request to a server with a certificate from another CA succeeded")
	}
	var ae *APIError
	if errors.As(err, &ae) {
		t.Errorf("got an API error %v, want a TLS failure", err)
	}
}

func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
