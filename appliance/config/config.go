// Package config owns clauderond's configuration: the typed Config struct, its
// defaults, loading it through viper from a YAML file, CLAUDERON_<KEY>
// environment variables and command-line flags, strict decoding (an unknown
// key is an error that names it), validation whose errors name the key and
// show a good value, and a printable view of the effective configuration.
//
// It refuses to do anything with the configuration: it never reads
// credentials, never touches Docker, nftables or the network, and never
// imports the parts (tlsmitm, dnsredir, netfilter). The appliance package
// converts a Config into each part's own option struct. The configuration holds
// no secret values by design: credentials come from the environment and
// state_dir/secrets, which the injector reads.
package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole daemon configuration. Every field has a mapstructure tag
// (the viper key) and a yaml tag (used by Redacted).
type Config struct {
	// Mode is "docker" (a host: clauderond owns a Docker bridge) or
	// "kubernetes" (a node agent: it adopts the CNI's bridge and learns
	// the pods from the API server; see KubernetesConfig).
	Mode     string `mapstructure:"mode" yaml:"mode"`
	StateDir string `mapstructure:"state_dir" yaml:"state_dir"`
	// CredentialsFile is a KEY=value file the daemon reads itself (after
	// its environment, before state_dir/secrets) on start, on SIGHUP and
	// whenever it changes. "" means none; a missing file holds nothing.
	CredentialsFile string           `mapstructure:"credentials_file" yaml:"credentials_file"`
	Log             LogConfig        `mapstructure:"log" yaml:"log"`
	Listen          ListenConfig     `mapstructure:"listen" yaml:"listen"`
	Socket          SocketConfig     `mapstructure:"socket" yaml:"socket"`
	Metrics         MetricsConfig    `mapstructure:"metrics" yaml:"metrics"`
	Network         NetworkConfig    `mapstructure:"network" yaml:"network"`
	Rules           []Rule           `mapstructure:"rules" yaml:"rules"`
	DefaultRules    bool             `mapstructure:"default_rules" yaml:"default_rules"`
	Egress          EgressConfig     `mapstructure:"egress" yaml:"egress"`
	Upstreams       []Upstream       `mapstructure:"upstreams" yaml:"upstreams"`
	DNS             DNSConfig        `mapstructure:"dns" yaml:"dns"`
	Profiles        ProfilesConfig   `mapstructure:"profiles" yaml:"profiles"`
	Sessions        SessionsConfig   `mapstructure:"sessions" yaml:"sessions"`
	Audit           AuditConfig      `mapstructure:"audit" yaml:"audit"`
	Authz           AuthzConfig      `mapstructure:"authz" yaml:"authz"`
	Kubernetes      KubernetesConfig `mapstructure:"kubernetes" yaml:"kubernetes"`
	DrainTimeout    time.Duration    `mapstructure:"drain_timeout" yaml:"drain_timeout"`
}

// LogConfig selects the daemon's slog handler.
type LogConfig struct {
	Level  string `mapstructure:"level" yaml:"level"`   // debug|info|warn|error
	Format string `mapstructure:"format" yaml:"format"` // text|json
}

// ListenConfig holds the ports of the listeners bound on the bridge gateway.
type ListenConfig struct {
	TLSPort int `mapstructure:"tls_port" yaml:"tls_port"`
	DNSPort int `mapstructure:"dns_port" yaml:"dns_port"`
}

// SocketConfig is the daemon API's Unix socket.
type SocketConfig struct {
	Path  string `mapstructure:"path" yaml:"path"`   // "" → <state_dir>/clauderond.sock
	Group string `mapstructure:"group" yaml:"group"` // group given the socket (mode 0660); "" → the daemon's group
	// AdminGroup's members see and act on every owner's sessions and audit
	// lines (root always does); "" means only root.
	AdminGroup string `mapstructure:"admin_group" yaml:"admin_group"`
}

// MetricsConfig is the Prometheus listener.
type MetricsConfig struct {
	Address string `mapstructure:"address" yaml:"address"` // "" disables
}

// NetworkConfig is the dedicated Docker bridge network.
type NetworkConfig struct {
	Name             string `mapstructure:"name" yaml:"name"`
	Bridge           string `mapstructure:"bridge" yaml:"bridge"`
	Subnet           Subnet `mapstructure:"subnet" yaml:"subnet"`
	AllowIntraBridge bool   `mapstructure:"allow_intra_bridge" yaml:"allow_intra_bridge"`
}

// Rule mirrors injector.Rule: which credential is injected for which host and
// how. The appliance converts it (config does not import the injector).
type Rule struct {
	Host               string   `mapstructure:"host" yaml:"host"`
	Credential         string   `mapstructure:"credential" yaml:"credential"`
	Header             string   `mapstructure:"header" yaml:"header,omitempty"`
	Format             string   `mapstructure:"format" yaml:"format,omitempty"`
	Template           string   `mapstructure:"template" yaml:"template,omitempty"`
	Strip              []string `mapstructure:"strip" yaml:"strip,omitempty"`
	OnClientCredential string   `mapstructure:"on_client_credential" yaml:"on_client_credential,omitempty"`
	Deny               []string `mapstructure:"deny" yaml:"deny,omitempty"`   // "[METHOD] /path/prefix" never given the credential
	Allow              []string `mapstructure:"allow" yaml:"allow,omitempty"` // when set, only these "[METHOD] /path/prefix" get it
	Push               []string `mapstructure:"push" yaml:"push,omitempty"`   // set: git pushes only to these "owner/repo" or "owner/*"
}

// EgressConfig is the policy for traffic that no rule intercepts.
type EgressConfig struct {
	Mode       EgressMode  `mapstructure:"mode" yaml:"mode"`   // enforce|audit
	Allow      []string    `mapstructure:"allow" yaml:"allow"` // hosts passed through untouched ("*.example.com" allowed)
	AllowCIDRs []AllowCIDR `mapstructure:"allow_cidrs" yaml:"allow_cidrs"`
}

// AllowCIDR lets containers reach a prefix directly on some ports.
type AllowCIDR struct {
	CIDR  CIDR   `mapstructure:"cidr" yaml:"cidr"`
	Proto string `mapstructure:"proto" yaml:"proto"` // tcp|udp; "" → tcp
	Ports []int  `mapstructure:"ports" yaml:"ports"`
}

// Upstream points a real host name at another address (tests, air-gapped
// sites). The container still sees the real name and the local CA.
type Upstream struct {
	Host    string `mapstructure:"host" yaml:"host"`
	Address string `mapstructure:"address" yaml:"address"`           // host:port
	CAFile  string `mapstructure:"ca_file" yaml:"ca_file,omitempty"` // PEM roots trusted for this upstream; "" → system roots
}

// DNSConfig configures the DNS shim.
type DNSConfig struct {
	DenyRcode     Rcode       `mapstructure:"deny_rcode" yaml:"deny_rcode"` // nxdomain|refused
	RatePerSecond float64     `mapstructure:"rate_per_second" yaml:"rate_per_second"`
	Burst         int         `mapstructure:"burst" yaml:"burst"`
	Servers       []DNSServer `mapstructure:"servers" yaml:"servers"` // upstream resolvers "ip" or "ip:port"; empty → host resolver
}

// ProfilesConfig configures credential profiles.
type ProfilesConfig struct {
	// RequireLabel refuses interception for containers without a
	// clauderon.profile label instead of using the default profile.
	RequireLabel bool `mapstructure:"require_label" yaml:"require_label"`
	// TrustLabels gives a container the profile its clauderon.profile
	// label names even when clauderond did not create it (the
	// single-tenant default). Off (a shared host), only containers made
	// by `clauderon create`/`run` get a profile by label; a labelled
	// container made otherwise gets no credential.
	TrustLabels bool `mapstructure:"trust_labels" yaml:"trust_labels"`
	// Access binds profiles to the users and groups who may create
	// sessions and runs with them; a profile not listed is open to every
	// user of the socket. (A list, not a map keyed by profile: the keys of
	// this file are fixed.)
	Access []ProfileAccess `mapstructure:"access" yaml:"access"`
}

// ProfileAccess lists who may use one profile.
type ProfileAccess struct {
	Profile string   `mapstructure:"profile" yaml:"profile"`
	Users   []string `mapstructure:"users" yaml:"users,omitempty"`
	Groups  []string `mapstructure:"groups" yaml:"groups,omitempty"`
	// Namespaces and ServiceAccounts ("namespace/name") bind the profile
	// to pods (node mode): a pod's clauderon.profile label selects it
	// only in one of these namespaces or as one of these accounts.
	Namespaces      []string `mapstructure:"namespaces" yaml:"namespaces,omitempty"`
	ServiceAccounts []string `mapstructure:"service_accounts" yaml:"service_accounts,omitempty"`
}

// SessionsConfig configures `clauderon create` sessions.
type SessionsConfig struct {
	Image   string `mapstructure:"image" yaml:"image"`
	User    string `mapstructure:"user" yaml:"user"` // uid[:gid] or name; never root
	Workdir string `mapstructure:"workdir" yaml:"workdir"`
	// WorkspacesDir holds each `create --repo` session's clone of the
	// caller's repository (<dir>/<name>). It and its parents must belong
	// to root and be writable by nobody else, so no user can swap a
	// session's mount source for another directory.
	WorkspacesDir string `mapstructure:"workspaces_dir" yaml:"workspaces_dir"`
}

// AuditConfig configures audit.jsonl rotation and each source's line
// budget.
type AuditConfig struct {
	MaxBytes   int64 `mapstructure:"max_bytes" yaml:"max_bytes"`
	MaxBackups int   `mapstructure:"max_backups" yaml:"max_backups"`
	// RatePerSecond and Burst bound the lines one container (or source
	// IP) may add to the audit; past them its lines are counted in an
	// "audit-dropped" line instead. RatePerSecond 0 turns the budget off.
	RatePerSecond float64 `mapstructure:"rate_per_second" yaml:"rate_per_second"`
	Burst         int     `mapstructure:"burst" yaml:"burst"`
}

// AuthzConfig is Docker's authorization plugin served by clauderond
// (appliance/authz): with dockerd configured to use it, containers that
// would escape enforcement are refused at creation.
type AuthzConfig struct {
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// Socket is where dockerd finds the plugin; its name (without .sock)
	// is the plugin's name in daemon.json's "authorization-plugins".
	Socket string `mapstructure:"socket" yaml:"socket"`
	// AllowNetworks lists Docker networks containers may use besides
	// clauderon's (and "none").
	AllowNetworks []string `mapstructure:"allow_networks" yaml:"allow_networks"`
}

// DefaultAuthzSocket is authz.socket's default: plugin name "clauderon".
const DefaultAuthzSocket = "/run/docker/plugins/clauderon.sock"

// DefaultWorkspacesDir is sessions.workspaces_dir's default.
const DefaultWorkspacesDir = "/var/lib/clauderon-workspaces"

// DefaultCredentialsFile is where the installed daemon's credentials live.
const DefaultCredentialsFile = "/etc/clauderon/credentials.env"

// Default returns the built-in configuration. StateDir is left empty; Load
// fills it from the invoking user's home (see DefaultStateDir).
func Default() *Config {
	return &Config{
		Mode:            ModeDocker,
		Kubernetes:      defaultKubernetes(),
		CredentialsFile: DefaultCredentialsFile,
		Log:             LogConfig{Level: "info", Format: "text"},
		Listen:          ListenConfig{TLSPort: 8443, DNSPort: 8053},
		Metrics:         MetricsConfig{Address: "127.0.0.1:9464"},
		Network:         NetworkConfig{Name: "clauderon", Bridge: "clauderon0", Subnet: Subnet{Prefix: netip.MustParsePrefix("10.213.0.0/24")}},
		Rules:           []Rule{},
		DefaultRules:    true,
		Egress:          EgressConfig{Mode: EgressEnforce, Allow: []string{}, AllowCIDRs: []AllowCIDR{}},
		Upstreams:       []Upstream{},
		DNS:             DNSConfig{DenyRcode: RcodeNXDomain, RatePerSecond: 500, Burst: 1000, Servers: []DNSServer{}},
		Profiles:        ProfilesConfig{TrustLabels: true, Access: []ProfileAccess{}},
		Authz:           AuthzConfig{Socket: DefaultAuthzSocket, AllowNetworks: []string{}},
		Sessions:        SessionsConfig{Image: "clauderon-agent:latest", User: "1000:1000", Workdir: "/workspace"},
		Audit:           AuditConfig{MaxBytes: 100 << 20, MaxBackups: 5, RatePerSecond: 200, Burst: 2000},
		DrainTimeout:    10 * time.Second,
	}
}

// SocketPath is the effective daemon socket: socket.path, or
// <state_dir>/clauderond.sock.
func (c *Config) SocketPath() string {
	if c.Socket.Path != "" {
		return c.Socket.Path
	}
	return c.StateDir + "/clauderond.sock"
}

// Redacted renders the effective configuration as YAML. The configuration
// holds no secret values (credentials live in the environment and
// state_dir/secrets); this is the only printing path so that stays checked.
func (c *Config) Redacted() string {
	text, err := c.render()
	if err != nil {
		return fmt.Sprintf("# cannot render config: %v\n", err)
	}
	return string(text)
}

// render is the configuration as a file would say it: typed values as text
// (MarshalText), durations as written ("10s").
func (c *Config) render() ([]byte, error) {
	var node yaml.Node
	if err := node.Encode(c); err != nil {
		return nil, err
	}
	// time.Duration encodes as nanoseconds; show it the way it is written.
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value == "drain_timeout" {
			node.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c.DrainTimeout.String()}
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&node); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
