// Package session owns agent sessions (`clauderon create`): one container
// clauderon-<name> on the clauderon network per session, persisted in
// state_dir/db.sqlite, plus the docker-run flags `clauderon run` prepends.
//
// A session container gets only what an agent needs and nothing that is
// secret: placeholder credentials in its environment, the local CA (public
// certificate, and a combined trust bundle) read-only at the usual trust
// paths with the usual CA variables, a claude.json of its own read-write in
// the session user's $HOME, a per-session uploads directory, and for Codex a
// dummy config. claude.json is never shared: each session gets
// state_dir/sessions/<name>/claude.json and each `clauderon run`
// state_dir/run/<random>/claude.json, both written fresh from
// ClaudeJSONContent, because a container that can write the claude.json
// another container reads can plant commands (mcpServers) that run with the
// other container's profile. state_dir/claude.json stays as the template
// of the layout and is never mounted. Every file it writes or removes in
// the state dir goes through an os.Root opened once on it, so symlinks
// planted there are never followed out of it.
// It refuses, by construction and by test, to mount anything else from the
// state dir: never secrets/, db.sqlite, audit.jsonl, sockets or the CA key.
// It does not manage the network, the firewall or identity (appliance does),
// and it never runs a session as root.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DockerAPI is the part of *client.Client the manager uses; tests fake it.
type DockerAPI interface {
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRestart(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecStart(ctx context.Context, execID string, config container.ExecStartOptions) error
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	CopyToContainer(ctx context.Context, containerID, dstPath string, content io.Reader, options container.CopyToContainerOptions) error
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (image.InspectResponse, error)
}

var _ DockerAPI = (*client.Client)(nil)

// NewDockerClient is the production client: environment settings
// (DOCKER_HOST…) and API version negotiation (dockerd 20.10 speaks 1.41).
func NewDockerClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("creating docker client: %w", err)
	}
	return c, nil
}

// Config configures a Manager.
type Config struct {
	Docker   DockerAPI
	DBPath   string // "" → StateDir/db.sqlite
	Network  string // docker network name, e.g. "clauderon"
	StateDir string
	CAPath   string // the CA certificate (PEM, public); "" → StateDir/proxy-ca.pem
	Image    string // default image (sessions.image)
	User     string // sessions.user, uid[:gid] or name; never root
	Workdir  string // sessions.workdir
	// WorkspacesDir holds repository sessions' clones (sessions.workspaces_dir).
	WorkspacesDir string
	// Authorize, if set, says whether the request's caller (api.PeerFrom)
	// may use a profile; its error is returned as is.
	Authorize func(ctx context.Context, profile string) error
	// IsAdmin, if set, says whether a non-root caller sees and may act on
	// every owner's sessions.
	IsAdmin func(ctx context.Context) bool
	// DNS is the resolver containers are given (--dns): the bridge gateway,
	// where dnsredir answers. Docker's embedded resolver then forwards to it
	// from the container's namespace, so the DNS policy applies even when
	// the host's own resolver is a loopback address. "" → Docker's default.
	DNS string
	// Home is the session user's $HOME when the image does not set HOME;
	// "" → /home/clauderon. claude.json is mounted at $HOME/.claude.json.
	Home string
	// Placeholders is the placeholder environment (injector.Placeholders());
	// nil → DefaultPlaceholders.
	Placeholders map[string]string
	// SystemBundle is the host trust bundle the CA is appended to;
	// "" → /etc/ssl/certs/ca-certificates.crt (missing is fine).
	SystemBundle string
	Logger       *slog.Logger
}

// DefaultPlaceholders are the placeholder credentials containers receive.
func DefaultPlaceholders() map[string]string {
	return map[string]string{
		"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-clauderon-proxy-placeholder",
		"OPENAI_API_KEY":          "sk-openai-clauderon-proxy-placeholder",
		"GITHUB_TOKEN":            "clauderon-proxy",
	}
}

// Manager creates, lists and removes sessions.
type Manager struct {
	opts  Config
	st    *store
	prov  *provenance
	root  *os.Root // the state dir; see files.go
	log   *slog.Logger
	mu    sync.Mutex // serializes Create/Remove so names stay unique
	close sync.Once
}

// New opens (or creates) the session database and prepares the state dir.
func New(ctx context.Context, opts Config) (*Manager, error) {
	if opts.Docker == nil {
		return nil, errors.New("session: Options.Docker is required")
	}
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("session: state dir %q must be an absolute path", opts.StateDir)
	}
	if opts.Network == "" {
		return nil, errors.New("session: Options.Network is required")
	}
	if err := checkUser(opts.User); err != nil {
		return nil, err
	}
	opts = withDefaults(opts)
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	root, err := os.OpenRoot(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("opening state dir: %w", err)
	}
	st, err := openStore(ctx, opts.DBPath)
	if err != nil {
		root.Close()
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opts: opts, st: st, root: root, log: log.With("component", "session"), prov: newProvenance()}
	if err := m.loadProvenance(ctx); err != nil {
		st.close()
		root.Close()
		return nil, err
	}
	m.cleanRunFiles(time.Now(), runFileMaxAge)
	if _, _, ok := numericIDs(opts.User); !ok {
		m.log.Warn("sessions.user is a name: clauderond cannot hand claude.json, the uploads dir and $HOME to it; use uid:gid (e.g. 1000:1000) so claude can write them", "user", opts.User)
	}
	return m, nil
}

func withDefaults(o Config) Config {
	if o.DBPath == "" {
		o.DBPath = filepath.Join(o.StateDir, "db.sqlite")
	}
	if o.CAPath == "" {
		o.CAPath = filepath.Join(o.StateDir, "proxy-ca.pem")
	}
	if o.Image == "" {
		o.Image = "clauderon-agent:latest"
	}
	if o.User == "" {
		o.User = "1000:1000"
	}
	if o.Workdir == "" {
		o.Workdir = "/workspace"
	}
	if o.Home == "" {
		o.Home = "/home/clauderon"
	}
	if o.Placeholders == nil {
		o.Placeholders = DefaultPlaceholders()
	}
	if o.SystemBundle == "" {
		o.SystemBundle = "/etc/ssl/certs/ca-certificates.crt"
	}
	return o
}

// Close closes the database. It is idempotent.
func (m *Manager) Close() error {
	var err error
	m.close.Do(func() { err = errors.Join(m.st.close(), m.root.Close()) })
	return err
}
