// Package doctor owns `clauderon doctor`: an end-to-end self-check of a
// running daemon that reports each step as {Name, OK, Detail, Fix}. It reads
// the daemon's status (readiness, rule drift, listeners, credential kinds),
// the CA and claude.json on disk, and then proves the whole path works: a
// throwaway probe container on the bridge, holding nothing but the CA, calls
// https://api.anthropic.com/ and the audit log must show the credential was
// injected for that container.
//
// It refuses to see credential values (only kinds and fingerprints from
// status), to pull images (the probe image is the daemon's own static
// binary, imported offline), and to change anything but its own probe
// container and image. Every failing step names the fix.
package doctor

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker is the part of *client.Client the probe uses.
type Docker interface {
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageImport(ctx context.Context, source image.ImportSource, ref string, options image.ImportOptions) (io.ReadCloser, error)
	ImageList(ctx context.Context, options image.ListOptions) ([]image.Summary, error)
	ImageRemove(ctx context.Context, imageID string, options image.RemoveOptions) ([]image.DeleteResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerWait(ctx context.Context, containerID string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ Docker = (*client.Client)(nil)

// Deps is what Run needs from the daemon.
type Deps struct {
	// Status is the daemon's own status (the backend's Status).
	Status func(ctx context.Context) (api.Status, error)
	// Docker runs the probe; nil skips the probe steps as failures.
	Docker Docker
	// Network is the docker network the probe joins (network.name).
	Network string
	// CAPath is the CA certificate (PEM); CAKeyPath its key ("" → next to it,
	// proxy-ca-key.pem), checked for 0600.
	CAPath, CAKeyPath string
	// AuditPath is audit.jsonl.
	AuditPath string
	// ClaudeJSON is state_dir/claude.json; SessionUser (sessions.user) must
	// be able to write it.
	ClaudeJSON, SessionUser string
	// Version tags the probe image clauderon-probe:<version>-<hash>.
	Version string
	// SelfExe is the static daemon binary copied into the probe image;
	// "" → /proc/self/exe.
	SelfExe string
	// ProbeURL defaults to https://api.anthropic.com/api/hello; ProbeHost
	// (the audit host to look for) to its host.
	ProbeURL string
	// ProbeTimeout bounds the whole probe (default 45s).
	ProbeTimeout time.Duration
	// AuditWait is how long to wait for the probe's audit line once the probe
	// got an answer (the audit writer flushes asynchronously; default 5s).
	AuditWait time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CredentialsFile is credentials_file ("" when none).
	CredentialsFile string
	// ProcStatus is read for the daemon's capabilities (default
	// /proc/self/status).
	ProcStatus string
	// AuthzAsked, when authz.enabled, counts the requests dockerd sent the
	// authorization plugin (named AuthzPlugin); nil skips the step.
	AuthzAsked  func() uint64
	AuthzPlugin string
	// ProbeToken, if set, registers the probe container (with its mounts)
	// as the daemon's own and returns the run token it carries.
	ProbeToken func(mounts []string) (string, error)
}

// DefaultProbeURL is the request the probe makes: the same call claude makes
// first, which carries no credential of its own.
const DefaultProbeURL = "https://api.anthropic.com/api/hello"

// Run performs every check and returns the report; it never returns early,
// so an operator sees all that is wrong at once.
func Run(ctx context.Context, deps Deps) api.DoctorReport {
	deps = withDefaults(deps)
	var rep api.DoctorReport
	add := func(s ...api.DoctorStep) { rep.Steps = append(rep.Steps, s...) }

	st, stErr := deps.Status(ctx)
	add(daemonStep(st, stErr))
	if stErr == nil {
		add(rulesStep(st), listenersStep(st))
		add(credentialSteps(st)...)
	}
	add(capabilitiesStep(deps.ProcStatus), credentialsFileStep(deps.CredentialsFile))
	add(caSteps(deps)...)
	add(claudeJSONStep(deps))
	add(probeSteps(ctx, deps, stErr == nil && st.Ready)...)
	if deps.AuthzAsked != nil {
		add(authzStep(deps.AuthzAsked(), deps.AuthzPlugin))
	}
	return rep
}

// authzStep checks that dockerd uses the authorization plugin: by now the
// probe's own Docker calls must have reached it.
func authzStep(asked uint64, plugin string) api.DoctorStep {
	s := api.DoctorStep{Name: "docker authorization plugin"}
	if asked > 0 {
		s.OK, s.Detail = true, fmt.Sprintf("dockerd asked the plugin %q about %d requests", plugin, asked)
		return s
	}
	s.Detail = fmt.Sprintf("authz.enabled is on but dockerd has not asked the plugin %q about any request: containers that escape enforcement are not refused", plugin)
	s.Fix = fmt.Sprintf(`add "authorization-plugins": ["%s"] to /etc/docker/daemon.json, then: sudo kill -HUP $(cat /var/run/docker.pid)`, plugin)
	return s
}

func withDefaults(d Deps) Deps {
	if d.Status == nil {
		d.Status = func(context.Context) (api.Status, error) {
			return api.Status{}, fmt.Errorf("no status source")
		}
	}
	if d.SelfExe == "" {
		d.SelfExe = "/proc/self/exe"
	}
	if d.ProcStatus == "" {
		d.ProcStatus = "/proc/self/status"
	}
	if d.ProbeURL == "" {
		d.ProbeURL = DefaultProbeURL
	}
	if d.ProbeTimeout == 0 {
		d.ProbeTimeout = 45 * time.Second
	}
	if d.AuditWait == 0 {
		d.AuditWait = 5 * time.Second
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Version == "" {
		d.Version = "dev"
	}
	return d
}
