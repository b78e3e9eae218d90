package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	systemFileForTest = "/nonexistent/clauderon-test/config.yaml"
	os.Exit(m.Run())
}

func TestLoad_SystemFileWhenPresent(t *testing.T) {
	clearEnv(t)
	old := systemFileForTest
	t.Cleanup(func() { systemFileForTest = old })
	systemFileForTest = filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(systemFileForTest, []byte("network: {name: fromsystem}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(LoadOptions{Env: []string{"HOME=/h"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.Name != "fromsystem" {
		t.Errorf("network.name = %q, want the system file's value", cfg.Network.Name)
	}
}

// load writes yamlText (if any) to a temp file and loads it with env set in
// the process environment (viper reads CLAUDERON_* from there).
func load(t *testing.T, yamlText string, env map[string]string) (*Config, error) {
	t.Helper()
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	file := ""
	if yamlText != "" {
		file = filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(file, []byte(yamlText), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Load(LoadOptions{File: file, Env: []string{"HOME=/home/tester"}})
}

// clearEnv removes every CLAUDERON_<KEY> of the runner's environment for the
// test (restored afterwards), so only the test's own overrides apply.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range append(Keys(), "config") {
		name := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
		if _, ok := os.LookupEnv(name); ok {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func TestLoad_DefaultsMatchContract(t *testing.T) {
	cfg, err := load(t, "", nil)
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	want := Default()
	want.StateDir = "/home/tester/.clauderon"
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("Load() defaults mismatch (-want +got):\n%s", diff)
	}
	if got, want := cfg.SocketPath(), "/home/tester/.clauderon/clauderond.sock"; got != want {
		t.Errorf("SocketPath() = %q, want %q", got, want)
	}
}

func TestLoad_Cases(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		wantErr string // substring; "" → success
		check   func(t *testing.T, c *Config)
	}{
		{name: "full_valid_file", yaml: `
state_dir: /srv/clauderon
log: {level: debug, format: json}
listen: {tls_port: 9443, dns_port: 9053}
metrics: {address: ""}
network: {name: agents, bridge: agents0, subnet: 10.50.0.0/16, allow_intra_bridge: true}
rules:
  - host: api.example.com
    credential: example
    format: template
    template: "token {{credential}}"
    strip: [X-Api-Key]
    on_client_credential: reject
default_rules: false
egress:
  mode: audit
  allow: [pypi.org, "*.pythonhosted.org"]
  allow_cidrs: [{cidr: 192.0.2.0/24, proto: udp, ports: [53, 123]}]
upstreams: [{host: api.anthropic.com, address: "127.0.0.1:9443", ca_file: ` + caFile + `}]
dns: {deny_rcode: refused, rate_per_second: 0, burst: 0, servers: [192.0.2.53, "192.0.2.54:5353"]}
profiles: {require_label: true}
sessions: {image: "registry.local/agent:1", user: "agent", workdir: /work}
audit: {max_bytes: 0, max_backups: 0}
drain_timeout: 1m30s
`, check: func(t *testing.T, c *Config) {
			if c.StateDir != "/srv/clauderon" || c.Network.Subnet.String() != "10.50.0.0/16" || c.DrainTimeout != 90*time.Second {
				t.Errorf("unexpected values: %+v", c)
			}
			if len(c.Rules) != 1 || c.Rules[0].OnClientCredential != "reject" || c.Rules[0].Strip[0] != "X-Api-Key" {
				t.Errorf("rules = %+v", c.Rules)
			}
			if c.Egress.AllowCIDRs[0].Ports[1] != 123 || c.Upstreams[0].CAFile != caFile || c.DefaultRules {
				t.Errorf("egress/upstreams = %+v %+v", c.Egress, c.Upstreams)
			}
		}},
		{name: "env_overrides_file", yaml: "network: {subnet: 10.1.0.0/24}\n",
			env: map[string]string{"CLAUDERON_NETWORK_SUBNET": "10.2.0.0/24", "CLAUDERON_EGRESS_MODE": "audit", "CLAUDERON_STATE_DIR": "/var/lib/x"},
			check: func(t *testing.T, c *Config) {
				if c.Network.Subnet.String() != "10.2.0.0/24" || c.Egress.Mode != "audit" || c.StateDir != "/var/lib/x" {
					t.Errorf("env not applied: %+v", c)
				}
			}},
		{name: "env_lists", env: map[string]string{
			"CLAUDERON_EGRESS_ALLOW":    "pypi.org, files.pythonhosted.org",
			"CLAUDERON_RULES":           `[{"host":"api.example.com","credential":"example","format":"bearer"}]`,
			"CLAUDERON_UPSTREAMS":       `[{host: api.openai.com, address: "127.0.0.1:1"}]`,
			"CLAUDERON_DRAIN_TIMEOUT":   "3s",
			"CLAUDERON_LISTEN_TLS_PORT": "7443",
			"CLAUDERON_DEFAULT_RULES":   "false",
		}, check: func(t *testing.T, c *Config) {
			if diff := cmp.Diff([]string{"pypi.org", "files.pythonhosted.org"}, c.Egress.Allow); diff != "" {
				t.Errorf("egress.allow (-want +got): %s", diff)
			}
			if len(c.Rules) != 1 || c.Rules[0].Host != "api.example.com" || len(c.Upstreams) != 1 {
				t.Errorf("rules/upstreams from env = %+v %+v", c.Rules, c.Upstreams)
			}
			if c.DrainTimeout != 3*time.Second || c.Listen.TLSPort != 7443 || c.DefaultRules {
				t.Errorf("scalars from env = %v %d %v", c.DrainTimeout, c.Listen.TLSPort, c.DefaultRules)
			}
		}},
		{name: "env_empty_metrics_disables", env: map[string]string{"CLAUDERON_METRICS_ADDRESS": ""},
			check: func(t *testing.T, c *Config) {
				if c.Metrics.Address != "" {
					t.Errorf("metrics.address = %q, want disabled", c.Metrics.Address)
				}
			}},
		{name: "unknown_top_key", yaml: "stat_dir: /x\n", wantErr: "stat_dir: unknown config key; did you mean state_dir?"},
		{name: "unknown_nested_key", yaml: "network: {subnett: 10.0.0.0/24}\n", wantErr: "network.subnett: unknown config key; did you mean network.subnet?"},
		{name: "unknown_key_in_rule", yaml: "rules: [{host: a.example.com, credential: x, hdr: X}]\n", wantErr: "rules[0].hdr: unknown config key"},
		{name: "unknown_key_in_upstream", yaml: "upstreams: [{host: api.anthropic.com, address: '127.0.0.1:1', cafile: x}]\n", wantErr: "upstreams[0].cafile: unknown config key"},
		{name: "rules_as_map", yaml: "rules: {host: a.example.com}\n", wantErr: "expected a list, not a mapping"},
		{name: "bad_yaml", yaml: "network: [\n", wantErr: "parsing config file"},
		{name: "subnet_not_cidr", yaml: "network: {subnet: 10.0.0.0/33}\n", wantErr: `network.subnet: "10.0.0.0/33" is not a CIDR; expected e.g. 10.213.0.0/24`},
		{name: "subnet_host_bits", yaml: "network: {subnet: 10.0.0.5/24}\n", wantErr: "network.subnet: \"10.0.0.5/24\" has host bits set; expected 10.0.0.0/24"},
		{name: "subnet_ipv6", env: map[string]string{"CLAUDERON_NETWORK_SUBNET": "fd00::/64"}, wantErr: "not an IPv4 CIDR"},
		{name: "subnet_too_small", yaml: "network: {subnet: 10.0.0.0/30}\n", wantErr: "prefix length between /8 and /29"},
		{name: "bridge_too_long", yaml: "network: {bridge: averyveryverylongname}\n", wantErr: "network.bridge"},
		{name: "port_zero", yaml: "listen: {tls_port: 0}\n", wantErr: "listen.tls_port: 0 is not a port 1..65535"},
		{name: "port_too_big", env: map[string]string{"CLAUDERON_LISTEN_DNS_PORT": "70000"}, wantErr: "listen.dns_port: 70000"},
		{name: "port_not_number", env: map[string]string{"CLAUDERON_LISTEN_DNS_PORT": "abc"}, wantErr: "dns_port"},
		{name: "ports_equal", yaml: "listen: {tls_port: 8000, dns_port: 8000}\n", wantErr: "same as listen.tls_port"},
		{name: "egress_mode", env: map[string]string{"CLAUDERON_EGRESS_MODE": "permissive"}, wantErr: `egress.mode: "permissive" is not one of enforce, audit`},
		{name: "egress_allow_ip", yaml: "egress: {allow: [1.2.3.4]}\n", wantErr: "egress.allow[0]"},
		{name: "egress_cidr_bad", yaml: "egress: {allow_cidrs: [{cidr: 10.0.0.0/40, ports: [1]}]}\n", wantErr: "egress.allow_cidrs[0].cidr"},
		{name: "egress_cidr_overlaps_bridge", yaml: "egress: {allow_cidrs: [{cidr: 10.213.0.0/16, ports: [1]}]}\n", wantErr: "overlaps the bridge subnet"},
		{name: "egress_cidr_no_ports", yaml: "egress: {allow_cidrs: [{cidr: 192.0.2.0/24, proto: tcp}]}\n", wantErr: "egress.allow_cidrs[0].ports: is empty"},
		{name: "egress_cidr_proto", yaml: "egress: {allow_cidrs: [{cidr: 192.0.2.0/24, proto: icmp, ports: [1]}]}\n", wantErr: "egress.allow_cidrs[0].proto"},
		{name: "deny_rcode", yaml: "dns: {deny_rcode: servfail}\n", wantErr: `dns.deny_rcode: "servfail" is not one of nxdomain, refused`},
		{name: "dns_server_name", yaml: "dns: {servers: [dns.google]}\n", wantErr: "dns.servers[0]"},
		{name: "dns_burst_zero_with_rate", yaml: "dns: {rate_per_second: 5, burst: 0}\n", wantErr: "dns.burst"},
		{name: "rule_bad_host", yaml: "rules: [{host: 'API.example.com', credential: x}]\n", wantErr: "rules[0].host"},
		{name: "rule_ip_host", yaml: "rules: [{host: 1.2.3.4, credential: x}]\n", wantErr: "rules[0].host"},
		{name: "rule_no_credential", yaml: "rules: [{host: a.example.com}]\n", wantErr: "rules[0].credential"},
		{name: "rule_bad_format", yaml: "rules: [{host: a.example.com, credential: x, format: digest}]\n", wantErr: "rules[0].format"},
		{name: "rule_template_missing_placeholder", yaml: "rules: [{host: a.example.com, credential: x, format: template, template: token}]\n", wantErr: "rules[0].template"},
		{name: "rule_bad_header", yaml: "rules: [{host: a.example.com, credential: x, header: 'Bad Header'}]\n", wantErr: "rules[0].header"},
		{name: "rule_bad_on_client", yaml: "rules: [{host: a.example.com, credential: x, on_client_credential: merge}]\n", wantErr: "rules[0].on_client_credential"},
		{name: "rule_duplicate_host", yaml: "rules: [{host: a.example.com, credential: x}, {host: a.example.com, credential: y}]\n", wantErr: "rules[1].host: \"a.example.com\" already appears in rules[0]"},
		{name: "upstream_bad_address", yaml: "upstreams: [{host: api.anthropic.com, address: localhost}]\n", wantErr: "upstreams[0].address"},
		{name: "upstream_ca_unreadable", yaml: "upstreams: [{host: api.anthropic.com, address: '127.0.0.1:1', ca_file: /nonexistent/ca.pem}]\n", wantErr: "upstreams[0].ca_file"},
		{name: "metrics_on_bridge", env: map[string]string{"CLAUDERON_METRICS_ADDRESS": "10.213.0.1:9464"}, wantErr: "metrics.address: \"10.213.0.1:9464\" is on the bridge subnet"},
		{name: "metrics_no_port", yaml: "metrics: {address: 127.0.0.1}\n", wantErr: "metrics.address"},
		{name: "sessions_root_uid", yaml: "sessions: {user: '0:0'}\n", wantErr: "sessions.user: \"0:0\" is root"},
		{name: "sessions_root_name", env: map[string]string{"CLAUDERON_SESSIONS_USER": "root"}, wantErr: "sessions.user: \"root\" is root"},
		{name: "sessions_workdir_relative", yaml: "sessions: {workdir: work}\n", wantErr: "sessions.workdir"},
		{name: "state_dir_relative", env: map[string]string{"CLAUDERON_STATE_DIR": "rel/dir"}, wantErr: "state_dir: \"rel/dir\" is not an absolute path"},
		{name: "log_level", yaml: "log: {level: loud}\n", wantErr: "log.level"},
		{name: "drain_timeout_bad", env: map[string]string{"CLAUDERON_DRAIN_TIMEOUT": "forever"}, wantErr: "drain_timeout"},
		{name: "drain_timeout_zero", yaml: "drain_timeout: 0s\n", wantErr: "drain_timeout: 0s is not between"},
		{name: "several_errors_reported_together", yaml: "egress: {mode: x}\ndns: {deny_rcode: y}\n", wantErr: "dns.deny_rcode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(t, tt.yaml, tt.env)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Load() = nil error, want error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load() error = %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}

func TestLoad_FlagsOverrideEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("CLAUDERON_STATE_DIR", "/from/env")
	t.Setenv("CLAUDERON_NETWORK_SUBNET", "10.3.0.0/24")
	fs := pflag.NewFlagSet("clauderond", pflag.ContinueOnError)
	fs.String("state-dir", "", "")
	fs.String("network.subnet", "", "")
	fs.String("config", "", "not a key, ignored")
	if err := fs.Parse([]string{"--state-dir=/from/flag"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(LoadOptions{Flags: fs, Env: []string{"HOME=/h"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/from/flag" {
		t.Errorf("state_dir = %q, want the flag's /from/flag", cfg.StateDir)
	}
	if cfg.Network.Subnet.String() != "10.3.0.0/24" {
		t.Errorf("network.subnet = %q, want env value (flag not set)", cfg.Network.Subnet)
	}
}

func TestLoad_MissingExplicitFile(t *testing.T) {
	clearEnv(t)
	_, err := Load(LoadOptions{File: "/nonexistent/clauderon.yaml", Env: []string{"HOME=/h"}})
	if err == nil || !strings.Contains(err.Error(), "reading config file") {
		t.Fatalf("Load(missing file) error = %v, want a reading config file error", err)
	}
}

func TestLoad_ConfigFromEnvVariable(t *testing.T) {
	clearEnv(t)
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("egress: {mode: audit}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(LoadOptions{Env: []string{"HOME=/h", "CLAUDERON_CONFIG=" + file}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Egress.Mode != "audit" {
		t.Errorf("egress.mode = %q, want audit from CLAUDERON_CONFIG file", cfg.Egress.Mode)
	}
}

func TestDefaultStateDir(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"home", []string{"HOME=/home/alice"}, "/home/alice/.clauderon"},
		{"sudo_root_user_uses_home", []string{"HOME=/root", "SUDO_USER=root"}, "/root/.clauderon"},
		{"sudo_user_from_passwd", []string{"HOME=/root", "SUDO_USER=" + passwdUser(t)}, passwdHome(t) + "/.clauderon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultStateDir(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("DefaultStateDir(%v) = %q, want %q", tt.env, got, tt.want)
			}
		})
	}
	if _, err := DefaultStateDir([]string{"SUDO_USER=no-such-user-xyz"}); err == nil || !strings.Contains(err.Error(), "set state_dir explicitly") {
		t.Errorf("unknown SUDO_USER error = %v, want advice", err)
	}
}

// passwdUser/passwdHome pick a non-root user from /etc/passwd (daemon, bin…).
func passwdEntry(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Skip("no /etc/passwd")
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 6 && f[0] != "root" && f[5] != "" {
			return f
		}
	}
	t.Skip("no non-root user in /etc/passwd")
	return nil
}
func passwdUser(t *testing.T) string { return passwdEntry(t)[0] }
func passwdHome(t *testing.T) string { return passwdEntry(t)[5] }

func TestRedacted_RoundTripsThroughLoad(t *testing.T) {
	cfg, err := load(t, "egress: {allow: [pypi.org]}\ndrain_timeout: 7s\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Redacted()
	if !strings.Contains(out, "drain_timeout: 7s") {
		t.Errorf("Redacted() does not render the duration as written:\n%s", out)
	}
	again, err := load(t, out, nil)
	if err != nil {
		t.Fatalf("Redacted() output does not load back: %v\n%s", err, out)
	}
	if diff := cmp.Diff(cfg, again); diff != "" {
		t.Errorf("Redacted round trip (-first +second):\n%s", diff)
	}
}

func TestKeys_CoverEveryField(t *testing.T) {
	keys := strings.Join(Keys(), " ")
	for _, k := range []string{"state_dir", "network.subnet", "egress.allow_cidrs", "upstreams", "dns.servers", "sessions.user", "drain_timeout", "socket.group"} {
		if !strings.Contains(keys, k) {
			t.Errorf("Keys() lacks %s: %s", k, keys)
		}
	}
}

var yamlBlockRE = regexp.MustCompile("(?s)```ya?ml\n(.*?)```")

// readmeConfigs returns the ```yaml blocks of a markdown text, without
// the ones marked "# not-a-config".
func readmeConfigs(md string) []string {
	var out []string
	for _, b := range yamlBlockRE.FindAllStringSubmatch(md, -1) {
		if !strings.Contains(b[1], "# not-a-config") {
			out = append(out, b[1])
		}
	}
	return out
}

func TestReadmeConfigs_Extraction(t *testing.T) {
	md := "text\n```yaml\negress: {mode: audit}\n```\n```sh\nls\n```\n```yaml\n# not-a-config\nfoo: [\n```\n```yml\nnetwork: {name: x}\n```\n"
	got := readmeConfigs(md)
	want := []string{"egress: {mode: audit}\n", "network: {name: x}\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("readmeConfigs (-want +got):\n%s", diff)
	}
}

// TestReadme loads every ```yaml block of the repository README as a config
// file. Blocks containing "# not-a-config" are skipped.
func TestReadme(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skipf("README.md: %v", err)
	}
	blocks := readmeConfigs(string(data))
	if len(blocks) == 0 {
		t.Log("README.md has no yaml config blocks yet")
	}
	for i, text := range blocks {
		t.Run(fmt.Sprintf("block%d", i), func(t *testing.T) {
			var probe map[string]any
			if err := yaml.Unmarshal([]byte(text), &probe); err != nil {
				t.Fatalf("README yaml block %d is not YAML: %v\n%s", i, err, text)
			}
			// ca_file paths in examples need not exist on the test machine.
			if _, err := load(t, text, nil); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					if !strings.Contains(line, ".ca_file:") {
						t.Errorf("README yaml block %d does not load: %v\n%s", i, err, text)
						break
					}
				}
			}
		})
	}
}

// FuzzConfigDecode: arbitrary YAML never panics Load; it yields a config or
// an error.
func FuzzConfigDecode(f *testing.F) {
	f.Add("network: {subnet: 10.0.0.0/24}\n")
	f.Add("rules: [{host: a.example.com, credential: x}]\n")
	f.Add("rules: {a: b}\n")
	f.Add("egress: [1, 2]\n")
	f.Add("drain_timeout: [x]\n")
	f.Add(": : :\n")
	dir := f.TempDir()
	for _, k := range Keys() {
		os.Unsetenv(EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_")))
	}
	f.Fuzz(func(t *testing.T, text string) {
		file := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(LoadOptions{File: file, Env: []string{"HOME=/h"}})
		if err == nil && cfg == nil {
			t.Fatal("Load returned neither config nor error")
		}
	})
}
