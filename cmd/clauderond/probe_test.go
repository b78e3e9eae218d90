package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeCertPEM(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbe_ReportsStatusWhenTrusted(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := runProbe(ctx, &out, srv.URL+"/api/hello", writeCertPEM(t, srv)); err != nil {
		t.Fatalf("runProbe = %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), probeStatusPrefix+"418\n") || !strings.Contains(out.String(), "tls verified") {
		t.Errorf("output = %q", out.String())
	}
}

func TestProbe_UntrustedCertificateFailsFastWithoutRetry(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	bogus := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(bogus, otherCAPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	start := time.Now()
	err := runProbe(context.Background(), &out, srv.URL, bogus)
	if err == nil || !strings.Contains(out.String(), probeTLSPrefix) {
		t.Fatalf("runProbe = %v, output %q; want a tls verification failure", err, out.String())
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("tls failure took %v; it must not be retried", time.Since(start))
	}
}

func TestProbe_RetriesConnectionErrorsUntilDeadline(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ca := writeCertPEM(t, srv)
	srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	err = runProbe(ctx, &out, "https://"+addr+"/", ca)
	if err == nil || !strings.Contains(out.String(), probeFailPrefix) {
		t.Fatalf("runProbe = %v, output %q", err, out.String())
	}
}

func TestProbe_CommandIsRegisteredAndHidden(t *testing.T) {
	root := newRootCmd()
	c, _, err := root.Find([]string{"probe"})
	if err != nil || c.Name() != "probe" || !c.Hidden {
		t.Fatalf("probe command: %v %v", c, err)
	}
}

// otherCAPEM is a fresh self-signed CA unrelated to httptest's certificate.
func otherCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
