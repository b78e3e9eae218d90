package fakeapi

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Echo answers every request with a JSON description of what arrived: method,
// host, path and headers. Header values equal to (or containing) a known
// secret are replaced by "<real:NAME>" so the echo proves injection without
// handing the credential back to the container.
type Echo struct {
	Name    string
	Secrets map[string]string // name → value
	Log     *Log
}

// ServeHTTP implements http.Handler.
func (e *Echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	headers := map[string]string{}
	auth := "none"
	for k, vs := range r.Header {
		v := strings.Join(vs, ", ")
		for name, secret := range e.Secrets {
			if secret != "" && strings.Contains(v, secret) {
				v = strings.ReplaceAll(v, secret, "<real:"+name+">")
				auth = "real"
			}
		}
		if auth != "real" && containsPlaceholder(v) {
			auth = "placeholder"
		}
		headers[k] = v
	}
	rec := newRequest(e.Name, r, auth)
	rec.Status = writeJSON(w, http.StatusOK, map[string]any{
		"server": e.Name, "method": r.Method, "host": r.Host, "path": r.URL.Path, "proto": r.Proto, "headers": headers,
	})
	e.Log.Add(rec)
}

// Git serves bare repositories under Root over git's smart-HTTP protocol
// (git http-backend through CGI). It answers only HTTP Basic
// `x-access-token:<Token>`, like github.com with a GitHub App or PAT token.
type Git struct {
	Root  string
	Token string
	Log   *Log
}

// ServeHTTP implements http.Handler.
func (g *Git) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := newRequest("git", r, g.auth(r))
	if rec.Auth != "real" {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "authentication required (auth="+rec.Auth+")", http.StatusUnauthorized)
		rec.Status = http.StatusUnauthorized
		g.Log.Add(rec)
		return
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h := &cgi.Handler{
		Path: gitPath(),
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + g.Root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	h.ServeHTTP(sw, r)
	rec.Status = sw.status
	g.Log.Add(rec)
}

func (g *Git) auth(r *http.Request) string {
	user, pass, ok := r.BasicAuth()
	authz := r.Header.Get("Authorization")
	return authOf(ok && user == "x-access-token" && equal(pass, g.Token), authz, basicCredentials(authz))
}

// basicCredentials decodes the "user:password" of a Basic Authorization
// header, or returns "" when it does not decode.
func basicCredentials(authz string) string {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(authz, "Basic "))
	if err != nil {
		return ""
	}
	return string(raw)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func gitPath() string {
	if p, err := exec.LookPath("git"); err == nil {
		return p
	}
	return "/usr/bin/git"
}

// CreateRepo creates the bare repository root/owner/name.git with one commit
// holding README.md = content. It needs git on the host.
func CreateRepo(ctx context.Context, root, owner, name, content string) error {
	work, err := os.MkdirTemp("", "fakeapi-repo-")
	if err != nil {
		return fmt.Errorf("creating work tree: %w", err)
	}
	defer os.RemoveAll(work)
	bare := filepath.Join(root, owner, name+".git")
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing README: %w", err)
	}
	steps := [][]string{
		{"init", "-q", "--bare", "-b", "main", bare},
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "README.md"},
		{"-C", work, "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", "commit", "-q", "-m", "initial"},
		{"-C", work, "push", "-q", bare, "main"},
	}
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, gitPath(), args...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Server is one fake upstream listening with TLS on a loopback port.
type Server struct {
	Addr string // 127.0.0.1:PORT
	srv  *http.Server
	done chan struct{}
}

// Serve starts h on a fresh 127.0.0.1 port with the given TLS config.
func Serve(h http.Handler, tlsCfg *tls.Config) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for fake upstream: %w", err)
	}
	s := &Server{Addr: ln.Addr().String(), done: make(chan struct{}),
		srv: &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}}
	go s.serve(tls.NewListener(ln, tlsCfg))
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	defer close(s.done)
	if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "fake upstream %s: %v\n", s.Addr, err)
	}
}

// Close stops the server and waits for its goroutine.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// Paths returns the sorted distinct "METHOD path" pairs in reqs, for logging.
func Paths(reqs []Request) []string {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[fmt.Sprintf("%s %s %s auth=%s status=%d", r.Server, r.Method, r.Path, r.Auth, r.Status)] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
