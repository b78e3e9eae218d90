package localca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRealClients serves, on 127.0.0.1 only, a leaf for api.anthropic.com
// issued through the Issuer, a leaf for evil.example and an IP leaf minted
// directly with the intermediate key (a leaked key), each with the
// intermediate in the chain, and asks the TLS clients installed on this
// machine (OpenSSL 3: openssl, curl, python3, node; GnuTLS: git's libcurl)
// for their verdict with only proxy-ca.pem trusted. A client whose binary is
// absent is skipped.
func TestRealClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs external TLS clients")
	}
	ca, dir := newConstrained(t)
	port := serveTestLeaves(t, ca)
	rootFile := filepath.Join(dir, CertFile)
	// Control: the same leaves under a CA without DNS constraints are
	// accepted, so a refusal above is the constraints' doing.
	loose := must(LoadOrCreate(t.TempDir()))
	loosePort := serveTestLeaves(t, loose)
	looseRoot := loose.CertPath()
	home := t.TempDir()

	type client struct {
		bin string
		run func(name, port, rootFile string) (string, error) // name "" = connect by IP
	}
	run := func(bin string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(cleanEnv(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
			"SSL_CERT_FILE=/nonexistent", "SSL_CERT_DIR=/nonexistent")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	target := func(name string) string {
		if name == "" {
			return "127.0.0.1"
		}
		return name
	}
	clients := []client{
		{"openssl", func(name, port, rootFile string) (string, error) {
			args := []string{"s_client", "-connect", "127.0.0.1:" + port, "-verify_return_error", "-CAfile", rootFile, "-no-CApath", "-brief"}
			if name != "" {
				args = append(args, "-servername", name, "-verify_hostname", name)
			} else {
				args = append(args, "-noservername", "-verify_ip", "127.0.0.1")
			}
			return run("openssl", args...)
		}},
		{"curl", func(name, port, rootFile string) (string, error) {
			args := []string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--cacert", rootFile, "--capath", "/nonexistent"}
			if name != "" {
				args = append(args, "--resolve", name+":"+port+":127.0.0.1")
			}
			return run("curl", append(args, "https://"+target(name)+":"+port+"/")...)
		}},
		{"python3", func(name, port, rootFile string) (string, error) {
			script := `import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
name = sys.argv[3] or None
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname=name or "127.0.0.1") as t:
        print("ok", t.version())`
			return run("python3", "-c", script, rootFile, port, name)
		}},
		{"node", func(name, port, rootFile string) (string, error) {
			script := `const tls = require("tls"), fs = require("fs");
const [ca, port, name] = process.argv.slice(1);
const opts = {host: "127.0.0.1", port: +port, ca: [fs.readFileSync(ca)]};
if (name) opts.servername = name;
const s = tls.connect(opts, () => { console.log("ok", s.getProtocol()); s.end(); });
s.on("error", e => { console.error("error", e.code, e.message); process.exit(1); });`
			return run("node", "-e", script, rootFile, port, name)
		}},
		{"git", func(name, port, rootFile string) (string, error) {
			if name == "" {
				return "skip", nil // git needs a host name for http.curloptResolve
			}
			out, err := run("git", "-c", "http.sslCAInfo="+rootFile,
				"-c", "http.curloptResolve="+name+":"+port+":127.0.0.1",
				"ls-remote", "https://"+name+":"+port+"/org/repo.git")
			// The server answers 404: reaching it means TLS was accepted.
			// (Its words, not "404" anywhere: the URL's random port may
			// hold those digits, as 40461 once did.)
			if strings.Contains(out, "not found") || strings.Contains(out, "returned error: 404") {
				return out, nil
			}
			if err == nil {
				err = errors.New("unexpected success")
			}
			return out, err
		}},
	}
	for _, c := range clients {
		t.Run(c.bin, func(t *testing.T) {
			if _, err := exec.LookPath(c.bin); err != nil {
				t.Skipf("%s not installed", c.bin)
			}
			out, err := c.run("api.anthropic.com", port, rootFile)
			if err != nil {
				t.Errorf("api.anthropic.com refused: %v\n%s", err, out)
			} else {
				t.Logf("api.anthropic.com accepted: %s", firstLine(out))
			}
			for _, name := range []string{"evil.example", ""} {
				out, err := c.run(name, port, rootFile)
				if out == "skip" {
					continue
				}
				if err == nil {
					t.Errorf("%s (minted with the intermediate key) accepted:\n%s", target(name), out)
					continue
				}
				low := strings.ToLower(out)
				if !strings.Contains(low, "permitted") && !strings.Contains(low, "constraint") && !strings.Contains(low, "certificate") && !strings.Contains(low, "subtree") {
					t.Errorf("%s refused, but not for the certificate: %v\n%s", target(name), err, out)
				}
				t.Logf("%s refused: %s", target(name), verdictLine(out))
			}
			if out, err := c.run("evil.example", loosePort, looseRoot); err != nil {
				t.Errorf("control: evil.example under an unconstrained CA refused: %v\n%s", err, out)
			}
		})
	}
}

// tlsCertFromIssued is the chain certmagic serves from an issued PEM.
// serveTestLeaves serves on 127.0.0.1 a leaf for api.anthropic.com issued
// by ca's Issuer, and leaves for evil.example and 127.0.0.1 (no SNI) minted
// directly with ca's intermediate key, each followed by the intermediate.
// Every HTTP request gets a 404. It returns the port.
func serveTestLeaves(t *testing.T, ca *CA) string {
	t.Helper()
	goodKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"api.anthropic.com"}}, goodKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	goodPEM, err := NewIssuer(ca, 0).Issue(context.Background(), csr)
	if err != nil {
		t.Fatal(err)
	}
	good := tlsCertFromIssued(t, goodPEM.Certificate)
	good.PrivateKey = goodKey
	chain := ca.Intermediate().Raw
	evilLeaf, evilKey := mint(t, ca, []string{"evil.example"}, nil)
	evil := tls.Certificate{Certificate: [][]byte{evilLeaf.Raw, chain}, PrivateKey: evilKey}
	ipLeaf, ipKey := mint(t, ca, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	ipCert := tls.Certificate{Certificate: [][]byte{ipLeaf.Raw, chain}, PrivateKey: ipKey}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			switch h.ServerName {
			case "api.anthropic.com":
				return &good, nil
			case "evil.example":
				return &evil, nil
			case "":
				return &ipCert, nil
			}
			return nil, errors.New("unknown name")
		},
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such repository", http.StatusNotFound)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func tlsCertFromIssued(t *testing.T, certPEM []byte) tls.Certificate {
	t.Helper()
	var c tls.Certificate
	for {
		var b *pem.Block
		b, certPEM = pem.Decode(certPEM)
		if b == nil {
			break
		}
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("issued PEM holds %d certificates, want leaf + intermediate", len(c.Certificate))
	}
	return c
}

// cleanEnv is the environment without trust-store or proxy settings
// (GIT_SSL_CAINFO, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, https_proxy, …), so
// each client trusts only what the test gives it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		u := strings.ToUpper(k)
		if strings.Contains(u, "SSL") || strings.Contains(u, "CERT") || strings.Contains(u, "CA_BUNDLE") || strings.Contains(u, "PROXY") ||
			strings.HasPrefix(u, "GIT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func firstLine(s string) string { return strings.SplitN(strings.TrimSpace(s), "\n", 2)[0] }

// verdictLine picks the line of a client's output that gives the reason.
func verdictLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "permitted") || strings.Contains(low, "constraint") || strings.Contains(low, "verif") {
			return strings.TrimSpace(l)
		}
	}
	return firstLine(s)
}
