//go:build e2e

// Package kubernetes deploys clauderond as the DaemonSet in
// scripts/kubernetes on a real single-node cluster (../shared/k8s) and
// plays the pods of two namespaces against it: the real Claude Code in a
// pod holding only the placeholder gets the fake Anthropic API's answer
// with its namespace's token injected; a pod in namespace A labelled with
// B's profile gets none; the bypasses a pod can try (the outside by IP on
// any port, its own DNS server, QUIC, DoT, the metadata address, the
// node's own services) fail, while what a cluster needs keeps working
// (pod to pod, Services on 443, the API server when allowed, the
// kubelet's probes, cluster DNS names); with the DaemonSet deleted, the
// pods' egress stays closed.
//
// It runs as its own `go test` invocation (scripts/test.sh), as root; it
// stops any ck8s cluster on the host first and purges it at the end.
package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/scripts/e2e/e2eutil"
	"github.com/clauderon/clauderond/scripts/fakeapi"
)

const (
	podCIDR     = "10.215.0.0/24" // ck8s's defaults, set explicitly
	serviceCIDR = "10.216.0.0/24"
	bridge      = "ck8s0"
	clusterDNS  = "10.216.0.53" // the stand-in cluster DNS Service
	apiService  = "10.216.0.1:443"
	nsA, nsB    = "clauderon-e2e-ka", "clauderon-e2e-kb"
	system      = "clauderon-system"
	stateDir    = "/var/lib/clauderon-e2e-k8s" // the DaemonSet's hostPath, not an operator's /var/lib/clauderon

	outsideNS     = "clauderon-e2e-k8s-out"
	vethHost      = "ce2k-out-h"
	vethNS        = "ce2k-out-n"
	outsideHostIP = "10.234.73.1"
	outsideIP     = "10.234.73.2"
	placeholder   = "sk-ant-oat01-clauderon-proxy-placeholder"
)

func TestKubernetes_DaemonSetConfinesPods(t *testing.T) {
	scratch := e2eutil.RootAndImage(t, "CLAUDERON_E2E_SCRATCH_IMAGE")
	debian := e2eutil.RootAndImage(t, "CLAUDERON_E2E_DEBIAN_IMAGE")
	root := e2eutil.RepoRoot(t)
	tmp := t.TempDir()
	bin := e2eutil.BuildBinaries(t, tmp)
	e2etool := filepath.Join(bin, "e2etool")
	e2eutil.MustRun(t, 5*time.Minute, root, []string{"CGO_ENABLED=0"}, "go", "build", "-o", e2etool, "./scripts/e2e/e2etool")
	out := strings.Fields(e2eutil.MustRun(t, 5*time.Minute, root, nil, "bash", "scripts/kubernetes/image.sh", "clauderond:e2e"))
	image := out[len(out)-1]

	// What an earlier, interrupted run left (the rules outlive the
	// DaemonSet on purpose) would confine the control pod.
	teardown(t, bin)
	c := upCluster(t)
	// After the cluster is down (cleanups run last-first): the rules the
	// deleted DaemonSet left, and its state.
	t.Cleanup(func() { teardown(t, bin) })
	c.loadImages(t, image, scratch, debian)
	startOutside(t, e2etool)
	nodeIP := strings.TrimSpace(c.k(t, "get", "node", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))

	// Before clauderond: a pod reaches the outside (the path exists, so
	// the refusals below are clauderond's doing).
	c.apply(t, namespaces())
	c.apply(t, scratchPod(nsA, "ctl", scratch, nil, "sleep", "3600"))
	c.waitPod(t, nsA, "ctl", false)
	reached := false
	for _, a := range c.bypass(t, nsA, "ctl", "-outside", outsideIP, "-only", "tcp") {
		reached = reached || a.Reached
	}
	if !reached {
		t.Fatal("control: without clauderond no pod reaches the outside recorder; the test could not see a bypass")
	}

	// The fake Anthropic API on the node's loopback (the DaemonSet shares
	// the node's network).
	toks := map[string]string{"default": "sk-ant-oat01-e2e-K8S-DEFAULT-" + e2eutil.RandomHex(8),
		"team-a": "sk-ant-oat01-e2e-K8S-TEAM-A-" + e2eutil.RandomHex(8), "team-b": "sk-ant-oat01-e2e-K8S-TEAM-B-" + e2eutil.RandomHex(8)}
	tk := fakeapi.NewTokens(toks)
	upCA, err := fakeapi.NewCA("clauderon e2e k8s upstream CA")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, _ := upCA.ServerTLS(false, "api.anthropic.com")
	// Claude Code (team-a's token, or none) meets the fake Anthropic API;
	// any other bearer meets Tokens, which answers whose it was.
	anth := &fakeapi.Anthropic{OAuthToken: toks["team-a"], Log: &fakeapi.Log{}}
	api, err := fakeapi.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a == "" || a == "Bearer "+toks["team-a"] {
			anth.ServeHTTP(w, r)
			return
		}
		tk.ServeHTTP(w, r)
	}), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })

	// The cluster's services the pods use: a web server (probed by the
	// kubelet) and a stand-in cluster DNS naming it.
	c.apply(t, scratchPod(nsA, "web", scratch, map[string]string{"app": "web"}, "e2etool", "recorder", "-tcp", "80,443", "-udp", "", "-icmp=false"))
	c.apply(t, service(nsA, "web", "", "web", "TCP", 80, 443))
	webIP := strings.TrimSpace(c.k(t, "-n", nsA, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"))
	webName := "web." + nsA + ".svc.cluster.local"
	c.apply(t, scratchPod(nsA, "dns", scratch, map[string]string{"app": "dns"}, "e2etool", "dnsserve", "-a", webName+"="+webIP))
	c.apply(t, service(nsA, "dns", clusterDNS, "dns", "UDP", 53))

	// The shared CA: made once, a Secret for the DaemonSet, a ConfigMap in
	// each workload namespace.
	caDir := filepath.Join(tmp, "ca")
	e2eutil.MustRun(t, time.Minute, root, nil, filepath.Join(bin, "clauderond"), "ca", "init", "--out", caDir)
	c.apply(t, readFile(t, filepath.Join(root, "scripts/kubernetes/namespace.yaml")))
	c.k(t, "-n", system, "create", "secret", "generic", "clauderon-ca",
		"--from-file="+filepath.Join(caDir, "proxy-ca.pem"), "--from-file="+filepath.Join(caDir, "proxy-ca-key.pem"))
	for _, ns := range []string{nsA, nsB} {
		c.k(t, "-n", ns, "create", "configmap", "clauderon-ca", "--from-file="+filepath.Join(caDir, "proxy-ca.pem"))
	}
	c.k(t, "-n", system, "create", "secret", "generic", "clauderond-credentials",
		"--from-literal=CLAUDE_CODE_OAUTH_TOKEN="+toks["default"],
		"--from-literal=CLAUDERON_PROFILE_TEAM_A_CLAUDE_CODE_OAUTH_TOKEN="+toks["team-a"],
		"--from-literal=CLAUDERON_PROFILE_TEAM_B_CLAUDE_CODE_OAUTH_TOKEN="+toks["team-b"])

	// clauderond, from the project's manifests with this test's overlay.
	overlay := writeOverlay(t, tmp, root, image, daemonConfig(api.Addr, nodeIP), upCA.PEM())
	c.k(t, "apply", "-k", overlay)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out, err := c.kubectl(ctx, "", "-n", system, "rollout", "status", "ds/clauderond", "--timeout=180s"); err != nil {
		c.dumpDaemon(t)
		t.Fatalf("the DaemonSet did not roll out: %v\n%s", err, out)
	}
	if ds := c.k(t, "-n", system, "get", "ds", "clauderond", "-o", "jsonpath={.status.numberReady}"); ds != "1" {
		t.Fatalf("DaemonSet ready pods = %q, want 1", ds)
	}

	t.Run("ClaudeCodeGetsItsNamespaceToken", func(t *testing.T) {
		c.apply(t, claudePod(nsA, "claude", debian, "team-a"))
		c.waitPod(t, nsA, "claude", true)
		out := c.k(t, "-n", nsA, "logs", "claude")
		if !strings.Contains(out, fakeapi.Reply) {
			t.Errorf("Claude Code's output lacks the fake API's answer:\n%s", out)
		}
		injected := false
		for _, r := range anth.Log.All() {
			injected = injected || (r.Path == "/v1/messages" && r.Auth == "real")
			if r.Auth == "placeholder" || r.Auth == "wrong" {
				t.Errorf("the upstream saw auth=%s on %s %s", r.Auth, r.Method, r.Path)
			}
		}
		if !injected {
			t.Errorf("the fake API never saw team-a's token on /v1/messages (other tokens seen: %v)", tk.Seen())
		}
		for name, tok := range toks {
			if strings.Contains(out, tok) {
				t.Errorf("SECRET LEAK: the %s token is in the pod's output", name)
			}
		}
		line := waitAudit(t, func(r auditLine) bool { return r.Pod == "claude" && r.Path == "/v1/messages" })
		if line.Namespace != nsA || line.ServiceAccount != "default" || !line.AuthInjected || line.Profile != "team-a" {
			t.Errorf("audit line %+v: want namespace %s, service account default, profile team-a, injected", line, nsA)
		}
		// The operator's CLI in the DaemonSet's pod: status names the pods,
		// audit shows the same line.
		if out := c.k(t, "-n", system, "exec", "ds/clauderond", "-c", "clauderond", "--", "clauderon", "status"); !strings.Contains(out, nsA+"/ctl") {
			t.Errorf("clauderon status in the DaemonSet's pod does not list %s/ctl:\n%s", nsA, out)
		}
		if out := c.k(t, "-n", system, "exec", "ds/clauderond", "-c", "clauderond", "--", "clauderon", "audit", "--json", "-n", "200"); !strings.Contains(out, `"pod":"claude"`) {
			t.Errorf("clauderon audit in the DaemonSet's pod lacks the claude pod's lines:\n%s", out)
		}
	})

	t.Run("LabelOfAnotherNamespacesProfileGetsNothing", func(t *testing.T) {
		c.apply(t, curlPod(nsA, "thief", debian, "team-b"))
		c.apply(t, curlPod(nsB, "owner", debian, "team-b"))
		c.apply(t, curlPod(nsA, "plain-a", debian, ""))
		c.apply(t, curlPod(nsB, "plain-b", debian, ""))
		for _, p := range [][2]string{{nsA, "thief"}, {nsB, "owner"}, {nsA, "plain-a"}, {nsB, "plain-b"}} {
			c.waitPod(t, p[0], p[1], true)
			t.Logf("%s/%s: %s", p[0], p[1], strings.TrimSpace(c.k(t, "-n", p[0], "logs", p[1])))
		}
		// The default profile is bound to namespace B only.
		if out := c.k(t, "-n", nsA, "logs", "plain-a"); !strings.Contains(out, "status=403") || !strings.Contains(out, "asks for profile default") {
			t.Errorf("an unlabelled pod in %s got %q; want 403 naming the default profile's binding", nsA, out)
		}
		if out := c.k(t, "-n", nsB, "logs", "plain-b"); !strings.Contains(out, "token=default") {
			t.Errorf("an unlabelled pod in %s got %q; want the default token injected", nsB, out)
		}
		if out := c.k(t, "-n", nsA, "logs", "thief"); !strings.Contains(out, "status=403") || !strings.Contains(out, "bound to namespaces") || strings.Contains(out, "token=team-b") {
			t.Errorf("a pod in %s labelled team-b got %q; want 403 naming the binding, no token", nsA, out)
		}
		if out := c.k(t, "-n", nsB, "logs", "owner"); !strings.Contains(out, "token=team-b") {
			t.Errorf("a pod in %s labelled team-b got %q; want team-b's token injected", nsB, out)
		}
	})

	t.Run("BypassesFail", func(t *testing.T) {
		host := []string{nodeIP + ":10250", nodeIP + ":22", "10.215.0.1:10250", "10.215.0.1:6443", "169.254.169.254:80"}
		as := c.bypass(t, nsA, "ctl", "-outside", outsideIP, "-hosts", strings.Join(host, ","), "-udp-hosts", "169.254.169.254:53")
		mustNotReach(t, "daemon running", as, host...)
		// Its own DNS server: the query lands on the shim, which refuses
		// a name no rule allows.
		if out, _ := c.exec(t, nsA, "ctl", "e2etool", "dnsq", "-server", outsideIP+":53", "exfil.evil.example"); !strings.Contains(out, `"rcode":3`) {
			t.Errorf("a query to the pod's own DNS server: %s; want NXDOMAIN from the shim", out)
		}
	})

	t.Run("TheClusterKeepsWorking", func(t *testing.T) {
		c.waitPod(t, nsA, "web", false) // its readiness probe comes from the kubelet on the node
		out, err := c.exec(t, nsA, "ctl", "e2etool", "dnsq", "-server", clusterDNS+":53", webName)
		if err != nil || !strings.Contains(out, webIP) {
			t.Errorf("cluster DNS for %s: %v %s; want %s", webName, err, out, webIP)
		}
		webPod := c.podIP(t, nsA, "web")
		for _, a := range c.bypass(t, nsA, "ctl", "-only", "none", "-hosts", strings.Join([]string{webIP + ":443", webIP + ":80", webPod + ":80"}, ",")) {
			if !a.Reached {
				t.Errorf("pod to %s (a Service or pod of the cluster) did not get through: %s", a.Target, a.Detail)
			}
		}
		for _, a := range c.bypass(t, nsA, "ctl", "-only", "none", "-hosts", apiService) {
			if !a.Connected {
				t.Errorf("the kubernetes Service (%s), allowed by api_server_endpoints, refused: %s", a.Target, a.Detail)
			}
		}
	})

	if t.Failed() { // what the daemon said, while it still runs
		c.dumpDaemon(t)
		b, _ := os.ReadFile(filepath.Join(stateDir, "audit.jsonl"))
		t.Logf("audit.jsonl:\n%s", b)
	}
	t.Run("DeletedDaemonSetLeavesEgressClosed", func(t *testing.T) {
		c.k(t, "-n", system, "delete", "ds", "clauderond", "--wait=true", "--timeout=120s")
		c.k(t, "-n", system, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=clauderond", "--timeout=120s")
		as := c.bypass(t, nsA, "ctl", "-outside", outsideIP, "-hosts", "169.254.169.254:80")
		mustNotReach(t, "daemon deleted", as)
		if out, err := c.exec(t, nsA, "ctl", "e2etool", "httpsget", "https://api.anthropic.com/v1/messages"); err == nil {
			t.Errorf("with the daemon gone, a request to api.anthropic.com succeeded: %s", out)
		}
		if exec.Command("nft", "list", "table", "inet", "clauderon").Run() != nil {
			t.Error("the nft table is gone with the DaemonSet; it must stay (fail closed)")
		}
	})
}

// teardown removes the node-mode rules (`clauderond teardown` in node
// mode: only the rules, never a Docker network) and the DaemonSet's state.
func teardown(t *testing.T, bin string) {
	t.Helper()
	td := exec.Command(filepath.Join(bin, "clauderond"), "teardown")
	td.Env = append(os.Environ(), "CLAUDERON_MODE=kubernetes", "CLAUDERON_KUBERNETES_NODE=ck8s-node",
		"CLAUDERON_NETWORK_BRIDGE="+bridge, "CLAUDERON_NETWORK_SUBNET=auto", "CLAUDERON_STATE_DIR="+stateDir)
	if out, err := td.CombinedOutput(); err != nil {
		t.Errorf("clauderond teardown: %v\n%s", err, out)
	}
	os.RemoveAll(stateDir)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// daemonConfig is the DaemonSet's config.yaml for this cluster.
func daemonConfig(apiAddr, nodeIP string) string {
	return fmt.Sprintf(`mode: kubernetes
state_dir: /var/lib/clauderon
credentials_file: ""
log: {level: debug, format: json}
socket: {path: /run/clauderon/clauderond.sock}
network: {bridge: %s, subnet: auto}
kubernetes:
  pod_cidrs: [%s]
  service_cidrs: [%s]
  api_server_endpoints: [%q]
  cluster_dns: %s
upstreams:
  - {host: api.anthropic.com, address: %q, ca_file: /etc/clauderon-e2e/upstream-ca.pem}
profiles:
  access:
    - {profile: team-a, namespaces: [%[7]s]}
    - {profile: team-b, namespaces: [%[8]s]}
    - {profile: default, namespaces: [%[8]s]}
`, bridge, podCIDR, serviceCIDR, nodeIP+":6443", clusterDNS, apiAddr, nsA, nsB)
}

// writeOverlay writes a kustomization over scripts/kubernetes: this
// test's image, config and upstream CA, and its own state hostPath.
func writeOverlay(t *testing.T, tmp, root, image, config string, upstreamCA []byte) string {
	t.Helper()
	dir := filepath.Join(tmp, "overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base, err := filepath.Rel(dir, filepath.Join(root, "scripts", "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	name, tag, _ := strings.Cut(image, ":")
	files := map[string]string{
		"config.yaml":     config,
		"upstream-ca.pem": string(upstreamCA),
		"kustomization.yaml": fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s]
images: [{name: clauderond, newName: %s, newTag: %s}]
configMapGenerator:
  - {name: clauderond-config, namespace: %[4]s, behavior: replace, files: [config.yaml], options: {disableNameSuffixHash: true}}
  - {name: clauderond-e2e-upstream, namespace: %[4]s, files: [upstream-ca.pem], options: {disableNameSuffixHash: true}}
patches:
  - path: daemonset-patch.yaml
`, base, name, tag, system),
		"daemonset-patch.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: clauderond, namespace: %s}
spec:
  template:
    spec:
      containers:
        - name: clauderond
          imagePullPolicy: Never
          volumeMounts:
            - {name: upstream, mountPath: /etc/clauderon-e2e, readOnly: true}
      initContainers:
        - name: install-ca
          imagePullPolicy: Never
          volumeMounts:
            - {name: upstream, mountPath: /etc/clauderon-e2e, readOnly: true}
      volumes:
        - {name: upstream, configMap: {name: clauderond-e2e-upstream}}
        - {name: state, hostPath: {path: %s, type: DirectoryOrCreate}}
`, system, stateDir),
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func namespaces() string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", nsA, nsB)
}

// scratchPod runs argv in the e2e scratch image (busybox + e2etool); a
// pod running the recorder on port 80 gets a kubelet tcpSocket probe.
func scratchPod(ns, name, image string, labels map[string]string, argv ...string) string {
	var lb []string
	for k, v := range labels {
		lb = append(lb, k+": "+v)
	}
	probe := ""
	if len(argv) > 1 && argv[1] == "recorder" {
		probe = "\n    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 2}"
	}
	args, _ := json.Marshal(argv)
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %q
    imagePullPolicy: Never
    command: %s%s
`, name, ns, strings.Join(lb, ", "), image, args, probe)
}

func service(ns, name, clusterIP, app, proto string, ports ...int) string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, fmt.Sprintf("{name: p%d, port: %d, protocol: %s}", p, p, proto))
	}
	ip := ""
	if clusterIP != "" {
		ip = "\n  clusterIP: " + clusterIP
	}
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  selector: {app: %s}%s\n  ports: %s\n",
		name, ns, app, ip, yamlList(ps...))
}

// agentPod runs sh -c script in the e2e Debian image (the real Claude Code,
// curl) as uid 1000 with only the placeholder and the CA from ConfigMap
// clauderon-ca, as scripts/kubernetes/example-pod.yaml does.
func agentPod(ns, name, image, profile, script string) string {
	labels := "{}"
	if profile != "" {
		labels = "{clauderon.profile: " + profile + "}"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: %s}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: agent
    image: %q
    imagePullPolicy: Never
    command: [sh, -c, %s]
    env:
    - {name: HOME, value: /home/agent}
    - {name: CLAUDE_CODE_OAUTH_TOKEN, value: %s}
    - {name: NODE_EXTRA_CA_CERTS, value: /etc/clauderon/proxy-ca.pem}
    - {name: DISABLE_AUTOUPDATER, value: "1"}
    volumeMounts:
    - {name: ca, mountPath: /etc/clauderon/proxy-ca.pem, subPath: proxy-ca.pem, readOnly: true}
    - {name: home, mountPath: /home/agent}
  volumes:
  - {name: ca, configMap: {name: clauderon-ca}}
  - {name: home, emptyDir: {}}
`, name, ns, labels, image, quoted(script), placeholder)
}

func claudePod(ns, name, image, profile string) string {
	return agentPod(ns, name, image, profile, `echo '{"hasCompletedOnboarding": true}' > "$HOME/.claude.json" && claude -p 'say hi' --dangerously-skip-permissions`)
}

func curlPod(ns, name, image, profile string) string {
	// Retried only when curl fails to get an answer at all: a pod's first
	// packets can meet the rules before its veth is registered (dropped,
	// fail closed). An HTTP status is an answer; what is asserted is it.
	return agentPod(ns, name, image, profile, `for i in 1 2 3 4; do `+
		`out=$(curl -sS --cacert /etc/clauderon/proxy-ca.pem -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" `+
		`https://api.anthropic.com/v1/messages -d '{}' -w ' status=%{http_code}' 2>&1) && break; echo "attempt $i: $out"; sleep 1; done; echo "$out"`)
}

// auditLine is the part of an audit.jsonl line the suite checks.
type auditLine struct {
	Namespace      string `json:"namespace"`
	Pod            string `json:"pod"`
	ServiceAccount string `json:"service_account"`
	Profile        string `json:"profile"`
	Path           string `json:"path"`
	Decision       string `json:"decision"`
	AuthInjected   bool   `json:"auth_injected"`
}

// waitAudit waits for a line of the DaemonSet's audit log (on the node)
// that matches.
func waitAudit(t *testing.T, match func(auditLine) bool) auditLine {
	t.Helper()
	var found auditLine
	e2eutil.WaitFor(t, "the audit line", 15*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(stateDir, "audit.jsonl"))
		for _, l := range strings.Split(string(b), "\n") {
			var r auditLine
			if json.Unmarshal([]byte(l), &r) == nil && match(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}
