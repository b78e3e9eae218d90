package session

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/netfilter/nftest"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

const testImage = "clauderon-test-busybox:latest"

// fakeClaude prints what the agent sees: argv, uid, env, mounts, and whether
// it can use its home, claude.json and the hooks dir.
const fakeClaude = `#!/bin/sh
echo "ARGS: $*"
case "$*" in *--print*|from-run) ;; *) read line; echo "GOT:$line"; exit 0;; esac
echo "ID: $(id -u):$(id -g)"
echo "ENV-BEGIN"; env | sort; echo "ENV-END"
echo "MOUNTS-BEGIN"; cat /proc/self/mountinfo; echo "MOUNTS-END"
touch "$HOME/.probe" && echo "HOME-WRITABLE"
echo ' ' >> "$HOME/.claude.json" && echo "CLAUDEJSON-WRITABLE"
grep -q clauderon /etc/ssl/certs/ca-certificates.crt && echo "BUNDLE-HAS-CA"
i=0; while [ $i -lt 50 ]; do [ -d /workspace/.clauderon/hooks ] && echo "HOOKS-OK" && break; i=$((i+1)); sleep 0.1; done
ls /uploads >/dev/null 2>&1 && echo "UPLOADS-OK"
exit 0
`

// buildBusyboxImage imports a FROM-scratch image holding the host's static
// busybox and a fake claude.
func buildBusyboxImage(t *testing.T, dc *client.Client) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static not installed: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "usr/", "usr/local/", "usr/local/bin/", "tmp/", "etc/"} {
		add(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))}, bb)
	for _, a := range []string{"sh", "mkdir", "chown", "env", "sort", "cat", "id", "touch", "grep", "sleep", "ls", "echo", "test", "["} {
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/local/bin/claude", Mode: 0o755, Size: int64(len(fakeClaude))}, []byte(fakeClaude))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	rc, err := dc.ImageImport(context.Background(), image.ImportSource{Source: &buf, SourceName: "-"}, testImage, image.ImportOptions{})
	if err != nil {
		t.Fatalf("importing test image: %v", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	rc.Close()
}

func TestDocker_PrintSessionSeesOnlyPlaceholdersAndTrust(t *testing.T) {
	nftest.RequireRoot(t)
	t.Setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-REAL-SECRET-in-daemon-env")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc, err := NewDockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := dc.Ping(ctx); err != nil {
		t.Skipf("docker not reachable: %v", err)
	}
	buildBusyboxImage(t, dc)
	netName := fmt.Sprintf("clauderon-sesstest-%d", os.Getpid())
	if _, err := dc.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge", Internal: true}); err != nil {
		t.Fatalf("creating test network: %v", err)
	}
	sessName := fmt.Sprintf("itest-%d", os.Getpid())
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = dc.ContainerRemove(cctx, ContainerName(sessName), container.RemoveOptions{Force: true})
		_ = dc.NetworkRemove(cctx, netName)
		_, _ = dc.ImageRemove(cctx, testImage, image.RemoveOptions{Force: true})
	})

	dir := stateDir(t)
	opts := Config{Docker: dc, Network: netName, StateDir: dir, Image: testImage, User: "1000:1000", Workdir: "/workspace"}
	m, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	se, err := m.Create(ctx, api.CreateRequest{Name: sessName, Prompt: "hello 'quoted' world", Print: true, Profile: "work"})
	if err != nil {
		t.Fatal(err)
	}
	out := waitAndLogs(ctx, t, m, sessName)

	for _, want := range []string{
		"ARGS: --dangerously-skip-permissions --print --verbose -- hello 'quoted' world",
		"ID: 1000:1000",
		"CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-clauderon-proxy-placeholder",
		"OPENAI_API_KEY=sk-openai-clauderon-proxy-placeholder",
		"GITHUB_TOKEN=clauderon-proxy",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"HOME=/home/clauderon",
		"HOME-WRITABLE", "CLAUDEJSON-WRITABLE", "BUNDLE-HAS-CA", "HOOKS-OK", "UPLOADS-OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("session output lacks %q", want)
		}
	}
	if strings.Contains(out, "REAL-SECRET") {
		t.Errorf("session output contains the daemon's real credential")
	}
	checkMountinfo(t, between(out, "MOUNTS-BEGIN", "MOUNTS-END"))

	in, err := dc.ContainerInspect(ctx, se.Container)
	if err != nil {
		t.Fatal(err)
	}
	if in.Config.Labels[LabelSession] != sessName || in.Config.Labels[LabelProfile] != "work" {
		t.Errorf("labels = %v", in.Config.Labels)
	}
	for _, mp := range in.Mounts {
		rel, _ := filepath.Rel(dir, mp.Source)
		for _, bad := range []string{"secrets", "db.sqlite", "audit.jsonl", ".sock", "key"} {
			if strings.Contains(rel, bad) {
				t.Errorf("mounted forbidden %s", mp.Source)
			}
		}
		if strings.HasSuffix(mp.Destination, ".claude.json") && !mp.RW {
			t.Errorf("claude.json mounted read-only")
		}
	}

	// The session survives a Manager restart, then rm removes the container.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	ss, err := m2.List(ctx)
	if err != nil || len(ss) != 1 || ss[0].Name != sessName || ss[0].State != "exited" || ss[0].ExitCode != 0 {
		t.Fatalf("List after restart = %+v, %v", ss, err)
	}
	if err := m2.Remove(ctx, sessName); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ContainerInspect(ctx, se.Container); err == nil {
		t.Errorf("container %s still exists after rm", se.Container)
	}

	// A container removed behind our back: the session becomes "gone".
	if _, err := m2.Create(ctx, api.CreateRequest{Name: sessName, Prompt: "again", Print: true}); err != nil {
		t.Fatal(err)
	}
	if err := dc.ContainerRemove(ctx, se.Container, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := m2.Get(ctx, sessName); err != nil || got.State != StateGone {
		t.Errorf("after docker rm: %+v, %v; want state gone", got, err)
	}
	if err := m2.Logs(ctx, sessName, false, io.Discard); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Logs(gone) = %v, want ErrNotFound", err)
	}
	if err := m2.Remove(ctx, sessName); err != nil {
		t.Errorf("Remove(gone) = %v", err)
	}

	// clauderon run: the docker CLI accepts RunArgs as they are.
	ra, err := m2.RunArgs(ctx, api.RunRequest{Profile: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI for the run check")
	}
	runName := "clauderon-run-" + sessName
	t.Cleanup(func() { _ = dc.ContainerRemove(context.Background(), runName, container.RemoveOptions{Force: true}) })
	argv := append(append([]string{"run", "--name", runName}, ra.Args...), testImage, "claude", "from-run")
	outb, err := exec.CommandContext(ctx, "docker", argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %v: %v\n%s", argv, err, outb)
	}
	for _, want := range []string{"ARGS: from-run", "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-clauderon-proxy-placeholder", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "BUNDLE-HAS-CA", "CLAUDEJSON-WRITABLE"} {
		if !strings.Contains(string(outb), want) {
			t.Errorf("clauderon run output lacks %q:\n%s", want, outb)
		}
	}
	if strings.Contains(string(outb), "REAL-SECRET") {
		t.Errorf("clauderon run container saw the real credential")
	}
	rin, err := dc.ContainerInspect(ctx, runName)
	if err != nil {
		t.Fatal(err)
	}
	if rin.Config.Labels[LabelProfile] != "ci" || string(rin.HostConfig.NetworkMode) != netName {
		t.Errorf("run container labels %v network %s", rin.Config.Labels, rin.HostConfig.NetworkMode)
	}
}

// TestDocker_InteractiveSessionTakesInput: an interactive session keeps a TTY
// with stdin open, which is what `clauderon attach` (docker attach) needs.
func TestDocker_InteractiveSessionTakesInput(t *testing.T) {
	nftest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc, err := NewDockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := dc.Ping(ctx); err != nil {
		t.Skipf("docker not reachable: %v", err)
	}
	buildBusyboxImage(t, dc)
	netName := fmt.Sprintf("clauderon-sesstest-i%d", os.Getpid())
	if _, err := dc.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge", Internal: true}); err != nil {
		t.Fatalf("creating test network: %v", err)
	}
	name := fmt.Sprintf("itest-i%d", os.Getpid())
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = dc.ContainerRemove(cctx, ContainerName(name), container.RemoveOptions{Force: true})
		_ = dc.NetworkRemove(cctx, netName)
		_, _ = dc.ImageRemove(cctx, testImage, image.RemoveOptions{Force: true})
	})
	m, err := New(ctx, Config{Docker: dc, Network: netName, StateDir: stateDir(t), Image: testImage, User: "1000:1000", Workdir: "/workspace"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	se, err := m.Create(ctx, api.CreateRequest{Name: name, Prompt: "interactive"})
	if err != nil {
		t.Fatal(err)
	}
	hj, err := dc.ContainerAttach(ctx, se.Container, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Close()
	if _, err := hj.Conn.Write([]byte("hello agent\n")); err != nil {
		t.Fatal(err)
	}
	_ = hj.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "GOT:hello agent") {
		n, err := hj.Reader.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading the session's terminal: %v; so far %q", err, got.String())
		}
	}
	var logs bytes.Buffer
	for i := 0; i < 50; i++ { // TTY logs are raw (not multiplexed)
		logs.Reset()
		if err := m.Logs(ctx, name, false, &logs); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs.String(), "GOT:hello agent") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "ARGS: --dangerously-skip-permissions -- interactive") || !strings.Contains(logs.String(), "GOT:hello agent") {
		t.Errorf("interactive logs = %q", logs.String())
	}
}

func waitAndLogs(ctx context.Context, t *testing.T, m *Manager, name string) string {
	t.Helper()
	for {
		se, err := m.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if se.State == "exited" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("session did not exit: %v", se.State)
		case <-time.After(100 * time.Millisecond):
		}
	}
	var buf bytes.Buffer
	if err := m.Logs(ctx, name, false, &buf); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	return buf.String()
}

func between(s, a, b string) string {
	_, after, _ := strings.Cut(s, a)
	before, _, _ := strings.Cut(after, b)
	return before
}

// checkMountinfo asserts the container's bind mounts are exactly the
// expected targets (plus Docker's own /etc/hosts, resolv.conf, hostname).
func checkMountinfo(t *testing.T, mountinfo string) {
	t.Helper()
	want := map[string]string{
		"/etc/ssl/certs/ca-certificates.crt":             "ro",
		"/usr/local/share/ca-certificates/clauderon.crt": "ro",
		"/home/clauderon/.claude.json":                   "rw",
		"/uploads":                                       "rw",
		"/etc/clauderon/proxy-ca.pem":                    "ro",
		"/workspace/.clauderon/uploads":                  "rw",
		"/etc/clauderon/codex":                           "ro",
		"/home/clauderon/.codex":                         "rw",
	}
	docker := map[string]bool{"/etc/hosts": true, "/etc/resolv.conf": true, "/etc/hostname": true}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		target, opts := f[4], f[5]
		if !strings.HasPrefix(target, "/") || target == "/" || strings.HasPrefix(target, "/proc") || strings.HasPrefix(target, "/dev") || strings.HasPrefix(target, "/sys") || docker[target] {
			continue
		}
		mode, ok := want[target]
		if !ok {
			t.Errorf("unexpected mount in container: %s", line)
			continue
		}
		seen[target] = true
		if !strings.HasPrefix(opts, mode) {
			t.Errorf("mount %s is %s, want %s", target, opts, mode)
		}
	}
	for target := range want {
		if !seen[target] {
			t.Errorf("mount %s missing in container", target)
		}
	}
}
