//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// findSecret returns the name of a real token found in data, or "".
func (s *suite) findSecret(data []byte) string {
	for name, v := range s.tokens {
		if bytes.Contains(data, []byte(v)) {
			return name
		}
	}
	return ""
}

// assertNoSecretsIn checks a container's output, its env/config (docker
// inspect) and the files it changed (docker diff) for any real token.
func (s *suite) assertNoSecretsIn(t testing.TB, r result) {
	t.Helper()
	if n := s.findSecret([]byte(r.Output)); n != "" {
		t.Errorf("SECRET LEAK: the real %s token is in container %s's output", n, r.Name)
	}
	inspect, err := docker(t, 30*time.Second, "inspect", r.Name)
	if err != nil {
		t.Fatalf("docker inspect %s: %v", r.Name, err)
	}
	if n := s.findSecret([]byte(inspect)); n != "" {
		t.Errorf("SECRET LEAK: the real %s token is in container %s's config (env, mounts, labels)", n, r.Name)
	}
	diff, err := docker(t, 30*time.Second, "diff", r.Name)
	if err != nil {
		t.Fatalf("docker diff %s: %v", r.Name, err)
	}
	for _, path := range changedLeaves(diff) {
		s.scanTar(t, r.Name, exec.Command("docker", "cp", r.Name+":"+path, "-"))
	}
}

// changedLeaves returns the added or changed paths of `docker diff` output
// that are not parents of another listed path (a changed directory is
// listed along with what changed in it).
func changedLeaves(diff string) []string {
	var paths []string
	for _, l := range lines(diff) {
		kind, path, _ := strings.Cut(l, " ")
		if kind != "D" && !strings.HasPrefix(path, "/proc") && !strings.HasPrefix(path, "/sys") {
			paths = append(paths, path)
		}
	}
	var leaves []string
	for _, p := range paths {
		parent := false
		for _, q := range paths {
			if strings.HasPrefix(q, p+"/") {
				parent = true
				break
			}
		}
		if !parent {
			leaves = append(leaves, p)
		}
	}
	return leaves
}

// scanTar reads the tar stream cmd prints and reports any file holding a
// real token.
func (s *suite) scanTar(t testing.TB, container string, cmd *exec.Cmd) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	files := 0
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err != nil {
			if err != io.EOF {
				t.Errorf("reading %v: %v", cmd.Args, err)
			}
			break
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		files++
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Errorf("reading %s from %s: %v", h.Name, container, err)
			break
		}
		if n := s.findSecret(data); n != "" {
			t.Errorf("SECRET LEAK: the real %s token is in file %s of container %s", n, h.Name, container)
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Errorf("%v: %v", cmd.Args, err)
	}
	return files
}

// TestSecrets_NeverInContainerFilesystem exports the whole filesystem of a
// container that ran the real Claude Code CLI (which rewrites its config
// files) and greps every file for the real tokens.
func TestSecrets_NeverInContainerFilesystem(t *testing.T) {
	s := env(t)
	r := s.clauderonRun(t, "export", []string{"-u", "1000:1000"}, s.debianImage,
		"sh", "-c", "claude -p 'say hi' --dangerously-skip-permissions; env; cat \"$HOME/.claude.json\"")
	if r.Err != nil {
		t.Fatalf("container failed: %v\n%s", r.Err, r.Output)
	}
	s.assertNoSecretsIn(t, r)
	if n := s.scanTar(t, r.Name, exec.Command("docker", "export", r.Name)); n < 1000 {
		t.Errorf("docker export of %s held only %d files; the scan did not see the filesystem", r.Name, n)
	}
}

// TestSecrets_NeverInDaemonLogsAuditOrStatus greps everything the daemon
// wrote or printed during the run.
func TestSecrets_NeverInDaemonLogsAuditOrStatus(t *testing.T) {
	s := env(t)
	// Make sure there is something injected to look at.
	TestClient_CurlViaClauderonRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status, err := s.cli(ctx, "status", "--json")
	if err != nil {
		t.Errorf("clauderon status --json: %v\n%s", err, status)
	}
	cfgCmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderond"), "--config", s.config, "config")
	cfgCmd.Env = s.daemonEnv()
	cfgOut, err := cfgCmd.CombinedOutput()
	if err != nil {
		t.Errorf("clauderond config: %v\n%s", err, cfgOut)
	}
	sources := map[string][]byte{"clauderon status --json": []byte(status), "clauderond config": cfgOut}
	for _, f := range []string{s.daemonLog(), s.auditPath()} {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			t.Fatalf("%s is empty or unreadable (%v): nothing to check", f, err)
		}
		sources[f] = data
	}
	for what, data := range sources {
		if n := s.findSecret(data); n != "" {
			t.Errorf("SECRET LEAK: the real %s token is in %s", n, what)
		}
	}
	// The CA key and secrets stay private on the host.
	for _, f := range []string{"proxy-ca-key.pem", "secrets"} {
		fi, err := os.Stat(filepath.Join(s.state, f))
		if err != nil {
			t.Errorf("stat %s: %v", f, err)
			continue
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group/other access", f, fi.Mode().Perm())
		}
	}
}
