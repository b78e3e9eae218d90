//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// containerName returns a unique container name for t, removed at cleanup.
func containerName(t testing.TB, role string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%s-%s", prefix, role, randomHex(3))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		run(ctx, "docker", "rm", "-f", name)
	})
	return name
}

// result is one finished container run.
type result struct {
	Name   string
	Output string
	Err    error
}

// docker runs `docker args...` with a timeout and returns its combined output.
func docker(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("docker %s: timed out after %s", args[0], timeout)
	}
	return string(out), err
}

// dockerRun is a plain `docker run --network clauderon-e2e` — no help from
// clauderon — with the caller's flags and command. The container is kept
// (for inspect/export) until the test ends.
func (s *suite) dockerRun(t testing.TB, role string, flags []string, image string, cmd ...string) result {
	t.Helper()
	name := containerName(t, role)
	args := append([]string{"run", "--name", name, "--network", networkName}, flags...)
	args = append(append(args, image), cmd...)
	out, err := docker(t, 3*time.Minute, args...)
	return result{Name: name, Output: out, Err: err}
}

// clauderonRun runs a container through `clauderon run`, which adds the
// network, CA, placeholders and claude.json before the caller's flags.
func (s *suite) clauderonRun(t testing.TB, role string, flags []string, image string, cmd ...string) result {
	t.Helper()
	name := containerName(t, role)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"run", "--name", name}, flags...)
	args = append(append(args, image), cmd...)
	out, err := s.cli(ctx, args...)
	return result{Name: name, Output: out, Err: err}
}

// manualCA returns the docker flags that give a plain container the
// daemon's CA: the file mounted plus the usual variables.
func (s *suite) manualCA(t testing.TB) []string {
	t.Helper()
	ca := filepath.Join(s.state, "proxy-ca.pem")
	if _, err := os.Stat(ca); err != nil {
		t.Fatalf("daemon CA %s: %v", ca, err)
	}
	const in = "/etc/clauderon/proxy-ca.pem"
	return []string{"-v", ca + ":" + in + ":ro",
		"-e", "SSL_CERT_FILE=" + in, "-e", "CURL_CA_BUNDLE=" + in, "-e", "REQUESTS_CA_BUNDLE=" + in,
		"-e", "NODE_EXTRA_CA_CERTS=" + in, "-e", "GIT_SSL_CAINFO=" + in}
}

// containerIP returns the container's address on network.
func containerIP(t testing.TB, name, network string) string {
	t.Helper()
	out, err := docker(t, 30*time.Second, "inspect", "--format",
		fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", network), name)
	if err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("docker inspect %s: %v %s", name, err, out)
	}
	return strings.TrimSpace(out)
}

// startRecorderContainer runs `e2etool recorder` detached on network and
// waits for READY.
func (s *suite) startRecorderContainer(t testing.TB, role, network string, tcp, udp string) string {
	t.Helper()
	name := containerName(t, role)
	if out, err := docker(t, time.Minute, "run", "-d", "--name", name, "--network", network, s.scratchImage,
		"e2etool", "recorder", "-tcp", tcp, "-udp", udp); err != nil {
		t.Fatalf("starting recorder container: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if out, _ := docker(t, 10*time.Second, "logs", name); strings.Contains(out, "READY") {
			return name
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("recorder container %s never became ready", name)
	return ""
}

// attempt mirrors e2etool bypass output.
type attempt struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Target    string `json:"target"`
	Connected bool   `json:"connected"`
	Reached   bool   `json:"reached"`
	Detail    string `json:"detail"`
}

func parseAttempts(t testing.TB, out string) []attempt {
	t.Helper()
	var as []attempt
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var a attempt
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("bad bypass line %q: %v", line, err)
		}
		as = append(as, a)
	}
	if len(as) == 0 {
		t.Fatalf("bypass printed no attempts:\n%s", out)
	}
	return as
}
