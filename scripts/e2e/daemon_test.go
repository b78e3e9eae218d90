//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeConfig writes the daemon's YAML config: our own network, the fakes
// standing in for the real hosts through `upstreams`, one passthrough host.
func (s *suite) writeConfig() error {
	s.state = filepath.Join(s.tmp, "state")
	if err := os.MkdirAll(filepath.Join(s.state, "secrets"), 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	// GitHub's token comes from the secrets dir, the others from the
	// environment: both credential sources are exercised.
	if err := os.WriteFile(filepath.Join(s.state, "secrets", "github"), []byte(s.tokens["github"]+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing secrets/github: %w", err)
	}
	var ups strings.Builder
	for _, h := range []string{"api.anthropic.com", "github.com", "api.github.com", echoHost, "registry.npmjs.org", passHost} {
		fmt.Fprintf(&ups, "  - {host: %s, address: %q, ca_file: %q}\n", h, s.upstreamAddr(h), s.caFile)
	}
	cfg := fmt.Sprintf(`# written by the clauderon e2e suite
state_dir: %q
log: {level: debug, format: json}
listen: {tls_port: %d, dns_port: %d}
socket: {path: %q}
metrics: {address: ""}
network: {name: %s, bridge: %s, subnet: %s, allow_intra_bridge: false}
default_rules: true
egress:
  mode: enforce
  allow: [%s]
upstreams:
%ssessions: {workspaces_dir: %q}
drain_timeout: 2s
`, s.state, tlsPort, dnsPort, s.socket(), networkName, bridgeName, subnet, passHost, ups.String(), filepath.Join(s.tmp, "workspaces"))
	s.config = filepath.Join(s.tmp, "config.yaml")
	return os.WriteFile(s.config, []byte(cfg), 0o600)
}

func (s *suite) socket() string { return filepath.Join(s.state, "clauderond.sock") }

func (s *suite) daemonLog() string { return filepath.Join(s.tmp, "daemon.log") }

// daemonEnv is the daemon's environment: the host's, without any
// CLAUDERON_* or credential variable, plus the real test tokens.
func (s *suite) daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "CLAUDERON_"), k == "CLAUDE_CODE_OAUTH_TOKEN", k == "ANTHROPIC_API_KEY",
			k == "OPENAI_API_KEY", k == "GITHUB_TOKEN", k == "GH_TOKEN", k == "NPM_TOKEN":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "CLAUDE_CODE_OAUTH_TOKEN="+s.tokens["anthropic"], "OPENAI_API_KEY="+s.tokens["openai"])
}

// daemon is a running bin/clauderond.
type daemon struct {
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	ready time.Duration // start → `clauderon status` exit 0
}

// startDaemon starts bin/clauderond --config and waits until
// `clauderon status` exits 0.
func (s *suite) startDaemon(ctx context.Context) error {
	logf, err := os.OpenFile(s.daemonLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening daemon log: %w", err)
	}
	fmt.Fprintf(logf, "\n===== e2e: starting clauderond at %s =====\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(filepath.Join(s.bin, "clauderond"), "--config", s.config)
	cmd.Env = s.daemonEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting clauderond: %w", err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); logf.Close(); close(d.done) }()
	s.daemon = d
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last string
	for {
		out, err := s.cli(ctx, "status")
		if err == nil {
			d.ready = time.Since(start)
			return nil
		}
		last = out
		select {
		case <-d.done:
			return fmt.Errorf("clauderond exited early (%v); log tail:\n%s", d.err, s.logTail(40))
		case <-ctx.Done():
			return fmt.Errorf("clauderond not ready after 90s; last `clauderon status`:\n%s\nlog tail:\n%s", last, s.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits (SIGKILL after 20 s).
func (d *daemon) stop() {
	if d == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// kill9 kills the daemon without letting it clean up.
func (d *daemon) kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// teardown removes the daemon's network and rules on purpose
// (`clauderond teardown`), then checks nothing is left.
func (s *suite) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderond"), "--config", s.config, "teardown")
	cmd.Env = s.daemonEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: clauderond teardown: %v\n%s", err, out)
	}
	if out := run(ctx, "nft", "list", "table", "inet", nftTable); !strings.Contains(out, "No such file") && strings.TrimSpace(out) != "" {
		fmt.Fprintf(os.Stderr, "e2e: table inet %s still present after teardown; deleting it\n", nftTable)
		run(ctx, "nft", "delete", "table", "inet", nftTable)
	}
	run(ctx, "docker", "network", "rm", networkName)
}

// cli runs bin/clauderon with the suite's socket.
func (s *suite) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderon"), args...)
	cmd.Env = append(os.Environ(), "CLAUDERON_SOCKET="+s.socket())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *suite) logTail(n int) string {
	data, _ := os.ReadFile(s.daemonLog())
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// auditRecord is one audit.jsonl line (the operator contract's fields).
type auditRecord struct {
	TS           time.Time `json:"ts"`
	Container    string    `json:"container"`
	SrcIP        string    `json:"src_ip"`
	OrigDst      string    `json:"orig_dst"`
	SNI          string    `json:"sni"`
	Host         string    `json:"host"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Status       int       `json:"status"`
	Decision     string    `json:"decision"`
	Rule         string    `json:"rule"`
	AuthInjected bool      `json:"auth_injected"`
	DurationMS   float64   `json:"duration_ms"`
	Error        string    `json:"error"`
	Kind         string    `json:"kind"`
	// PlaceholderFrom: the container another container's placeholder came from.
	PlaceholderFrom string `json:"placeholder_from"`
}

func (s *suite) auditPath() string { return filepath.Join(s.state, "audit.jsonl") }

// audit returns every audit record written so far.
func (s *suite) audit(t testing.TB) []auditRecord {
	t.Helper()
	data, err := os.ReadFile(s.auditPath())
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("reading audit.jsonl: %v", err)
	}
	var out []auditRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Errorf("audit.jsonl line is not JSON: %v: %q", err, sc.Text())
			continue
		}
		out = append(out, r)
	}
	return out
}

// waitAudit waits up to 10 s for a record matching match and returns it.
func (s *suite) waitAudit(t testing.TB, what string, match func(auditRecord) bool) auditRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := s.audit(t)
		for _, r := range recs {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			var tail []string
			for _, r := range recs[max(0, len(recs)-8):] {
				b, _ := json.Marshal(r)
				tail = append(tail, string(b))
			}
			t.Fatalf("no audit record for %s; last records:\n%s", what, strings.Join(tail, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
