//go:build e2e

package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/scripts/e2e/e2eutil"
)

// cluster is ../shared/k8s's single-node cluster, brought up by the suite.
type cluster struct {
	dir string   // the ck8s scripts
	env []string // what `cluster.sh up` exports (KUBECONFIG, PATH, ...)
}

// k8sDir is where ck8s lives: beside the checkout (CI), or
// $CLAUDERON_E2E_K8S_DIR.
func k8sDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CLAUDERON_E2E_K8S_DIR")
	if dir == "" {
		dir = filepath.Join(e2eutil.RepoRoot(t), "..", "shared", "k8s")
	}
	if _, err := os.Stat(filepath.Join(dir, "cluster.sh")); err != nil {
		t.Fatalf("the ck8s cluster scripts are not at %s (set CLAUDERON_E2E_K8S_DIR): %v", dir, err)
	}
	return dir
}

// upCluster builds Kubernetes (cached after the first time) and starts a
// clean cluster; the test's cleanup stops it and removes its state.
func upCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: k8sDir(t)}
	e2eutil.MustRun(t, 20*time.Minute, c.dir, nil, "bash", "build.sh")
	e2eutil.MustRun(t, 2*time.Minute, c.dir, nil, "bash", "cluster.sh", "down", "--purge")
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("CLAUDERON_E2E_K8S_KEEP") != "" {
			t.Log("CLAUDERON_E2E_K8S_KEEP: the failed run's cluster stays up (cluster.sh down --purge removes it)")
			return
		}
		if out, err := exec.Command("bash", filepath.Join(c.dir, "cluster.sh"), "down", "--purge").CombinedOutput(); err != nil {
			t.Errorf("cluster.sh down --purge: %v\n%s", err, out)
		}
	})
	out := e2eutil.MustRun(t, 5*time.Minute, c.dir, []string{"CK8S_POD_CIDR=" + podCIDR, "CK8S_SERVICE_CIDR=" + serviceCIDR}, "bash", "cluster.sh", "up")
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "export "); ok {
			c.env = append(c.env, strings.Fields(rest)...)
		}
	}
	if len(c.env) == 0 {
		t.Fatalf("cluster.sh up printed no exports:\n%s", out)
	}
	return c
}

// environ is the process environment with the cluster's exports (PATH
// with ck8s's bin first).
func (c *cluster) environ() []string {
	env := os.Environ()
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		v = strings.ReplaceAll(v, "$PATH", os.Getenv("PATH"))
		env = append(env, k+"="+v)
	}
	return env
}

// kubectl runs kubectl with the cluster's kubeconfig.
func (c *cluster) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Env = c.environ()
	for _, kv := range cmd.Env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			if path, err := lookPath("kubectl", p); err == nil {
				cmd.Path = path
			}
		}
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// k runs kubectl and fails the test on error.
func (c *cluster) k(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := c.kubectl(ctx, "", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// apply applies YAML from a string.
func (c *cluster) apply(t *testing.T, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := c.kubectl(ctx, yaml, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, yaml)
	}
}

// loadImages copies Docker images into the cluster's containerd.
func (c *cluster) loadImages(t *testing.T, images ...string) {
	t.Helper()
	e2eutil.MustRun(t, 10*time.Minute, c.dir, nil, "bash", append([]string{"cluster.sh", "load-image"}, images...)...)
}

// exec runs argv in a pod's first container and returns its output.
func (c *cluster) exec(t *testing.T, ns, pod string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.kubectl(ctx, "", append([]string{"-n", ns, "exec", pod, "--"}, argv...)...)
}

// waitPod waits until the pod is Ready, or (done) has finished.
func (c *cluster) waitPod(t *testing.T, ns, pod string, done bool) {
	t.Helper()
	cond := "condition=Ready"
	if done {
		cond = "jsonpath={.status.phase}=Succeeded"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out, err := c.kubectl(ctx, "", "-n", ns, "wait", "--for="+cond, "pod/"+pod, "--timeout=180s"); err != nil {
		logs, _ := c.kubectl(ctx, "", "-n", ns, "logs", pod, "--all-containers", "--tail=50")
		desc, _ := c.kubectl(ctx, "", "-n", ns, "describe", "pod", pod)
		t.Fatalf("pod %s/%s not %s: %v\n%s\nlogs:\n%s\n%s", ns, pod, cond, err, out, logs, desc)
	}
}

// podIP is a pod's address.
func (c *cluster) podIP(t *testing.T, ns, pod string) string {
	t.Helper()
	return strings.TrimSpace(c.k(t, "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
}

// attempt is one line of `e2etool bypass`.
type attempt struct {
	Name      string `json:"name"`
	Target    string `json:"target"`
	Connected bool   `json:"connected"`
	Reached   bool   `json:"reached"`
	Detail    string `json:"detail"`
}

// bypass runs `e2etool bypass args...` in a pod and returns its attempts.
func (c *cluster) bypass(t *testing.T, ns, pod string, args ...string) []attempt {
	t.Helper()
	out, err := c.exec(t, ns, pod, append([]string{"e2etool", "bypass", "-timeout", "2s"}, args...)...)
	if err != nil {
		t.Fatalf("e2etool bypass in %s/%s: %v\n%s", ns, pod, err, out)
	}
	var as []attempt
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var a attempt
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("bypass output %q: %v", line, err)
		}
		as = append(as, a)
	}
	return as
}

// outside is a network namespace routed from the host, standing in for the
// internet, with e2etool's recorder answering on every port.
func startOutside(t *testing.T, e2etool string) {
	t.Helper()
	delOutside := func() {
		exec.Command("ip", "netns", "del", outsideNS).Run()
		exec.Command("ip", "link", "del", vethHost).Run()
	}
	delOutside()
	t.Cleanup(delOutside)
	for _, args := range [][]string{
		{"netns", "add", outsideNS},
		{"link", "add", vethHost, "type", "veth", "peer", "name", vethNS},
		{"link", "set", vethNS, "netns", outsideNS},
		{"addr", "add", outsideHostIP + "/24", "dev", vethHost},
		{"link", "set", vethHost, "up"},
		{"-n", outsideNS, "link", "set", "lo", "up"},
		{"-n", outsideNS, "addr", "add", outsideIP + "/24", "dev", vethNS},
		{"-n", outsideNS, "link", "set", vethNS, "up"},
		{"-n", outsideNS, "route", "add", "default", "via", outsideHostIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	rec := exec.Command("ip", "netns", "exec", outsideNS, e2etool, "recorder", "-tcp", "22,53,80,443,853,6443,8080", "-udp", "53,123,443,853", "-icmp=false")
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Process.Kill(); rec.Wait() })
}

// mustNotReach fails for every attempt that reached the recorder, or
// connected to a target that must refuse.
func mustNotReach(t *testing.T, when string, as []attempt, refuse ...string) {
	t.Helper()
	if len(as) == 0 {
		t.Fatalf("%s: no bypass attempt ran", when)
	}
	for _, a := range as {
		if a.Reached {
			t.Errorf("%s: BYPASS %s (%s) reached the outside: %s", when, a.Name, a.Target, a.Detail)
		}
		for _, r := range refuse {
			if a.Target == r && a.Connected {
				t.Errorf("%s: %s connected to %s, which must refuse", when, a.Name, a.Target)
			}
		}
	}
}

func yamlList(items ...string) string { return "[" + strings.Join(items, ", ") + "]" }

func quoted(s string) string { return fmt.Sprintf("%q", s) }

// dumpDaemon logs the DaemonSet's pods and their logs (on failure).
func (c *cluster) dumpDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"-n", "clauderon-system", "get", "pods", "-o", "wide"},
		{"-n", "clauderon-system", "describe", "pods"},
		{"-n", "clauderon-system", "logs", "ds/clauderond", "-c", "install-ca", "--tail=30"},
		{"-n", "clauderon-system", "logs", "ds/clauderond", "-c", "install-ca", "--tail=30", "--previous"},
		{"-n", "clauderon-system", "logs", "ds/clauderond", "-c", "clauderond", "--tail=400"},
		{"-n", "clauderon-system", "logs", "ds/clauderond", "-c", "clauderond", "--tail=60", "--previous"},
	} {
		out, _ := c.kubectl(ctx, "", args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}
