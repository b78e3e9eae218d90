package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"go.uber.org/goleak"
)

// fakeBackend records calls and returns canned values.
type fakeBackend struct {
	mu       sync.Mutex
	sessions map[string]Session
	gotQuery AuditQuery
	reloads  int
	// logsGate, if set, is awaited between the two log chunks.
	logsGate chan struct{}
}

func newFake() *fakeBackend { return &fakeBackend{sessions: map[string]Session{}} }

var testStatus = Status{
	Ready: true, Version: "v0.1.0", StateDir: "/home/u/.clauderon", Socket: "/home/u/.clauderon/clauderond.sock", Mode: "enforce",
	Network:     Network{Name: "clauderon", Bridge: "clauderon0", Subnet: "10.213.0.0/24", Gateway: "10.213.0.1"},
	Listeners:   []Listener{{Name: "tls", Address: "10.213.0.1:8443", OK: true}},
	Enforcement: EnforcementIntact,
	Counters:    []Counter{{Rule: "clauderon:redirect-443", Packets: 3, Bytes: 180}},
	Credentials: []Credential{{Profile: "default", Name: "anthropic", Source: "env:CLAUDE_CODE_OAUTH_TOKEN", Kind: "anthropic-oauth", Fingerprint: "ab12cd", Present: true}},
	Containers:  []Container{{ID: "abc", Name: "clauderon-x", IP: "10.213.0.2", Profile: "default"}},
	CA:          CA{Path: "/home/u/.clauderon/proxy-ca.pem", Fingerprint: "ff00"},
	Requests:    map[string]uint64{"intercept": 4},
}

func (f *fakeBackend) Status(ctx context.Context) (Status, error) { return testStatus, nil }

func (f *fakeBackend) CreateSession(ctx context.Context, req CreateRequest) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Name == "" {
		return Session{}, fmt.Errorf("name is required: %w", ErrInvalid)
	}
	if _, ok := f.sessions[req.Name]; ok {
		return Session{}, fmt.Errorf("session %q: %w", req.Name, ErrConflict)
	}
	s := Session{Name: req.Name, Container: "clauderon-" + req.Name, Prompt: req.Prompt, Agent: "claude", State: "running", Print: req.Print,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	f.sessions[req.Name] = s
	return s, nil
}

func (f *fakeBackend) ListSessions(ctx context.Context) ([]Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Session
	for _, s := range f.sessions {
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeBackend) ControlSession(ctx context.Context, name, action string) (Session, error) {
	return Session{Name: name, State: action + "ped"}, nil
}

func (f *fakeBackend) PrepareWorkspace(ctx context.Context, name string) (Workspace, error) {
	return Workspace{Path: "/var/lib/clauderon-workspaces/" + name, UID: 1000, GID: 1000}, nil
}

func (f *fakeBackend) RemoveSession(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[name]; !ok {
		return fmt.Errorf("session %q: %w", name, ErrNotFound)
	}
	delete(f.sessions, name)
	return nil
}

func (f *fakeBackend) SessionLogs(ctx context.Context, name string, follow bool, w io.Writer) error {
	if name == "missing" {
		return fmt.Errorf("session %q: %w", name, ErrNotFound)
	}
	if name == "breaks" {
		fmt.Fprintln(w, "partial")
		return errors.New("docker went away\nsecond line")
	}
	fmt.Fprintf(w, "first follow=%v\n", follow)
	if f.logsGate != nil {
		select {
		case <-f.logsGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Fprintln(w, "second")
	if follow && name == "forever" {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *fakeBackend) RunArgs(ctx context.Context, req RunRequest) (RunArgs, error) {
	return RunArgs{Args: []string{"--network", "clauderon", "--label", "clauderon.profile=" + req.Profile}}, nil
}

func (f *fakeBackend) Doctor(ctx context.Context) (DoctorReport, error) {
	return DoctorReport{Steps: []DoctorStep{{Name: "daemon", OK: true}, {Name: "ca", OK: false, Detail: "unreadable", Fix: "restart"}}}, nil
}

func (f *fakeBackend) CA(ctx context.Context) (CA, error) {
	return CA{Path: "/p", Fingerprint: "ff", PEM: "-----BEGIN CERTIFICATE-----\n"}, nil
}

func (f *fakeBackend) Audit(ctx context.Context, q AuditQuery, w io.Writer) error {
	f.mu.Lock()
	f.gotQuery = q
	f.mu.Unlock()
	_, err := io.WriteString(w, `{"host":"api.anthropic.com"}`+"\n")
	return err
}

func (f *fakeBackend) Reload(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	if f.reloads > 1 {
		return errors.New("reloading config: network.subnet: bad")
	}
	return nil
}

// serve runs NewHandler(b) on a Unix socket in a temp dir and returns a client.
func serve(t *testing.T, b Backend) *Client {
	t.Helper()
	checkGoroutines(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewHandler(b, nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	c := NewClient(sock)
	t.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return c
}

// checkGoroutines fails the test if goroutines started during it outlive it.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { testutil.NoLeaks(t, before) })
}

func TestClient_RoundTripsEveryMethod(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testStatus, st); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	s, err := c.CreateSession(ctx, CreateRequest{Name: "a", Prompt: "hi 'there'", Print: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Container != "clauderon-a" || s.Prompt != "hi 'there'" || !s.Print || s.CreatedAt.IsZero() {
		t.Errorf("CreateSession = %+v", s)
	}
	ss, err := c.ListSessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].Name != "a" {
		t.Errorf("ListSessions = %+v, %v", ss, err)
	}
	args, err := c.RunArgs(ctx, RunRequest{Profile: "work"})
	if err != nil || !cmp.Equal(args.Args, []string{"--network", "clauderon", "--label", "clauderon.profile=work"}) {
		t.Errorf("RunArgs = %v, %v", args, err)
	}
	rep, err := c.Doctor(ctx)
	if err != nil || len(rep.Steps) != 2 || rep.OK() || rep.Steps[1].Fix != "restart" {
		t.Errorf("Doctor = %+v, %v", rep, err)
	}
	ca, err := c.CA(ctx)
	if err != nil || !strings.HasPrefix(ca.PEM, "-----BEGIN") {
		t.Errorf("CA = %+v, %v", ca, err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Errorf("Reload = %v", err)
	}
	if err := c.RemoveSession(ctx, "a"); err != nil {
		t.Errorf("RemoveSession = %v", err)
	}
	ss, err = c.ListSessions(ctx)
	if err != nil || ss == nil || len(ss) != 0 {
		t.Errorf("ListSessions after rm = %#v, %v (want empty non-nil)", ss, err)
	}
}

func TestClient_ErrorsCarryServerMessageAndStatus(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func() error
		sentinel error
		msg      string
	}{
		{"not_found", func() error { return c.RemoveSession(ctx, "nope") }, ErrNotFound, `session "nope": not found`},
		{"invalid", func() error { _, err := c.CreateSession(ctx, CreateRequest{}); return err }, ErrInvalid, "name is required"},
		{"conflict", func() error {
			_, _ = c.CreateSession(ctx, CreateRequest{Name: "dup"})
			_, err := c.CreateSession(ctx, CreateRequest{Name: "dup"})
			return err
		}, ErrConflict, `session "dup": already exists`},
		{"internal", func() error { _ = c.Reload(ctx); return c.Reload(ctx) }, nil, "reloading config: network.subnet: bad"},
		{"logs_not_found_before_stream", func() error { return c.SessionLogs(ctx, "missing", false, io.Discard) }, ErrNotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var apiErr *Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %v (%T), want *api.Error", err, err)
			}
			if !strings.Contains(apiErr.Message, tt.msg) {
				t.Errorf("message = %q, want it to contain %q", apiErr.Message, tt.msg)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.sentinel)
			}
			if tt.sentinel == nil && apiErr.Status != http.StatusInternalServerError {
				t.Errorf("status = %d, want 500", apiErr.Status)
			}
		})
	}
}

func TestClient_UnreachableDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "nobody.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Status() error = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), "nobody.sock") {
		t.Errorf("error %q does not name the socket", err)
	}
}

func TestHandler_RejectsBadRequests(t *testing.T) {
	c := serve(t, newFake())
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown_field", http.MethodPost, PathSessions, `{"name":"a","bogus":1}`, http.StatusBadRequest},
		{"not_json", http.MethodPost, PathRunArgs, `{`, http.StatusBadRequest},
		{"bad_follow", http.MethodGet, PathAudit + "?follow=maybe", "", http.StatusBadRequest},
		{"bad_lines", http.MethodGet, PathAudit + "?lines=-3", "", http.StatusBadRequest},
		{"unknown_path", http.MethodGet, "/v1/nothing", "", http.StatusNotFound},
		{"wrong_method_is_clear_404", http.MethodPut, PathStatus, "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://clauderond"+tt.path, strings.NewReader(tt.body))
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
		})
	}
}

func TestStream_AuditQueryAndLines(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	var buf bytes.Buffer
	q := AuditQuery{Container: "clauderon-a", Host: "api.anthropic.com", Lines: 20}
	if err := c.Audit(context.Background(), q, &buf); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != `{"host":"api.anthropic.com"}`+"\n" {
		t.Errorf("audit body = %q", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gotQuery != q {
		t.Errorf("backend got query %+v, want %+v", f.gotQuery, q)
	}
}

// chunkWriter signals each write.
type chunkWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes chan string
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	w.writes <- string(p)
	return len(p), nil
}

func (w *chunkWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestStream_FlushesEachWriteBeforeBackendFinishes(t *testing.T) {
	f := newFake()
	f.logsGate = make(chan struct{})
	c := serve(t, f)
	w := &chunkWriter{writes: make(chan string, 10)}
	errc := make(chan error, 1)
	go func() { errc <- c.SessionLogs(context.Background(), "s", true, w) }()
	select {
	case got := <-w.writes:
		if got != "first follow=true\n" {
			t.Errorf("first chunk = %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first log chunk not delivered while the backend was still running: stream is buffered")
	}
	close(f.logsGate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := w.String(); got != "first follow=true\nsecond\n" {
		t.Errorf("logs = %q", got)
	}
}

func TestStream_ErrorAfterStartArrivesInTrailer(t *testing.T) {
	c := serve(t, newFake())
	var buf bytes.Buffer
	err := c.SessionLogs(context.Background(), "breaks", false, &buf)
	if err == nil || !strings.Contains(err.Error(), "docker went away; second line") {
		t.Fatalf("SessionLogs error = %v, want the trailer's message", err)
	}
	if buf.String() != "partial\n" {
		t.Errorf("body = %q", buf.String())
	}
}

func TestStream_CancelStopsFollowOnBothSides(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	w := &chunkWriter{writes: make(chan string, 10)}
	errc := make(chan error, 1)
	go func() { errc <- c.SessionLogs(ctx, "forever", true, w) }()
	for !strings.Contains(w.String(), "second") {
		select {
		case <-w.writes:
		case <-time.After(5 * time.Second):
			t.Fatalf("follow output incomplete: %q", w.String())
		}
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("SessionLogs after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not stop on cancel")
	}
	// checkGoroutines (in serve) verifies the backend's follow returned.
}
