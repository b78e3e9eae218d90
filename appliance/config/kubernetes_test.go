package config

import (
	"strings"
	"testing"
)

const nodeYAML = `mode: kubernetes
network: {bridge: cni0, subnet: 10.244.1.0/24}
kubernetes:
  pod_cidrs: [10.244.0.0/16]
  service_cidrs: [10.96.0.0/12]
  api_server_endpoints: ["192.0.2.5:6443"]
  cluster_dns: 10.96.0.10
profiles:
  access:
    - {profile: team-a, namespaces: [team-a], service_accounts: [team-a/runner]}
`

func TestKubernetes_NodeModeFromFileAndEnv(t *testing.T) {
	cfg, err := load(t, nodeYAML, map[string]string{"CLAUDERON_KUBERNETES_NODE": "node-1"})
	if err != nil {
		t.Fatalf("valid node config: %v", err)
	}
	if !cfg.NodeMode() || cfg.Kubernetes.Node != "node-1" || cfg.Kubernetes.ClusterDomain != "cluster.local" {
		t.Errorf("mode %q node %q domain %q", cfg.Mode, cfg.Kubernetes.Node, cfg.Kubernetes.ClusterDomain)
	}
	if got := cfg.ClusterDNSServer().String(); got != "10.96.0.10:53" {
		t.Errorf("ClusterDNSServer = %s, want 10.96.0.10:53", got)
	}
	if a := cfg.Profiles.Access[0]; len(a.Namespaces) != 1 || a.ServiceAccounts[0] != "team-a/runner" {
		t.Errorf("access = %+v", a)
	}
}

func TestKubernetes_BadValuesNameTheirKey(t *testing.T) {
	for _, tc := range []struct{ from, to, key string }{
		{"mode: kubernetes", "mode: swarm", "mode"},
		{"pod_cidrs: [10.244.0.0/16]", "pod_cidrs: [10.244.0.1/16]", "kubernetes.pod_cidrs[0]"},
		{"pod_cidrs: [10.244.0.0/16]", "pod_cidrs: [10.9.0.0/16]", "network.subnet"},
		{"service_cidrs: [10.96.0.0/12]", "service_cidrs: [fd00::/64]", "kubernetes.service_cidrs[0]"},
		{`"192.0.2.5:6443"`, `"api.example:6443"`, "kubernetes.api_server_endpoints[0]"},
		{"cluster_dns: 10.96.0.10", "cluster_dns: coredns", "kubernetes.cluster_dns"},
		{"namespaces: [team-a]", "namespaces: [Team_A]", "profiles.access[0].namespaces[0]"},
		{"service_accounts: [team-a/runner]", "service_accounts: [runner]", "profiles.access[0].service_accounts[0]"},
	} {
		_, err := load(t, strings.Replace(nodeYAML, tc.from, tc.to, 1), map[string]string{"CLAUDERON_KUBERNETES_NODE": "node-1"})
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%s: err = %v, want one naming %s", tc.to, err, tc.key)
		}
	}
	if _, err := load(t, nodeYAML, nil); err == nil || !strings.Contains(err.Error(), "kubernetes.node") {
		t.Errorf("no node name: err = %v, want one naming kubernetes.node", err)
	}
}

func TestKubernetes_DockerModeIgnoresTheSection(t *testing.T) {
	cfg, err := load(t, "kubernetes: {pod_cidrs: [bogus]}\n", nil)
	if err != nil || cfg.NodeMode() {
		t.Fatalf("docker mode: err = %v, node mode %v", err, cfg.NodeMode())
	}
}

func TestKubernetes_SubnetAutoOnlyInNodeMode(t *testing.T) {
	auto := strings.Replace(nodeYAML, "subnet: 10.244.1.0/24", "subnet: auto", 1)
	if _, err := load(t, auto, map[string]string{"CLAUDERON_KUBERNETES_NODE": "node-1"}); err != nil {
		t.Errorf("node mode with network.subnet auto: %v", err)
	}
	if _, err := load(t, "network: {subnet: auto}\n", nil); err == nil || !strings.Contains(err.Error(), "network.subnet") {
		t.Errorf("docker mode with network.subnet auto: err = %v, want one naming network.subnet", err)
	}
}
