package session

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
)

// Labels put on session containers; identity reads clauderon.profile.
const (
	LabelSession = "clauderon.session"
	LabelProfile = "clauderon.profile"
)

// Paths inside containers. The reference tool's paths
// (ReferenceCAPath, <workdir>/.clauderon/uploads, ReferenceCodexDir) exist
// beside ours, so its users' scripts keep working.
const (
	ContainerBundlePath = "/etc/ssl/certs/ca-certificates.crt"
	ContainerCAPath     = "/usr/local/share/ca-certificates/clauderon.crt"
	ContainerUploads    = "/uploads"
	ReferenceCAPath     = "/etc/clauderon/proxy-ca.pem"
	ReferenceCodexDir   = "/etc/clauderon/codex"
)

// uploadsIn is the reference's uploads path under workdir.
func uploadsIn(workdir string) string {
	return strings.TrimSuffix(workdir, "/") + "/.clauderon/uploads"
}

// CAEnvVars all point at the combined bundle.
var CAEnvVars = []string{"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"}

var (
	nameRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	profileRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	userRE    = regexp.MustCompile(`^([0-9]+|[a-z_][a-z0-9_-]*)(:([0-9]+|[a-z_][a-z0-9_-]*))?$`)
)

// ContainerName is the container of session name.
func ContainerName(name string) string { return "clauderon-" + name }

func checkUser(u string) error {
	if u == "" {
		return nil
	}
	if !userRE.MatchString(u) {
		return fmt.Errorf("session user %q is not uid[:gid] or a name: %w", u, api.ErrInvalid)
	}
	name, _, _ := strings.Cut(u, ":")
	if n, err := strconv.Atoi(name); name == "root" || (err == nil && n == 0) {
		return fmt.Errorf("session user %q is root; claude --dangerously-skip-permissions refuses root, use e.g. 1000:1000: %w", u, api.ErrInvalid)
	}
	return nil
}

// numericIDs returns uid and gid when the user is "uid[:gid]" (gid defaults
// to uid); ok is false for names.
func numericIDs(u string) (uid, gid int, ok bool) {
	us, gs, hasG := strings.Cut(u, ":")
	uid, err := strconv.Atoi(us)
	if err != nil {
		return 0, 0, false
	}
	gid = uid
	if hasG {
		if gid, err = strconv.Atoi(gs); err != nil {
			return 0, 0, false
		}
	}
	return uid, gid, true
}

// normalize validates a create request and fills defaults.
func (m *Manager) normalize(req api.CreateRequest) (api.CreateRequest, error) {
	if !nameRE.MatchString(req.Name) {
		return req, fmt.Errorf("session name %q must be 1-63 of a-z A-Z 0-9 _ . - starting with a letter or digit, e.g. fix-tests: %w", req.Name, api.ErrInvalid)
	}
	if req.Image == "" {
		req.Image = m.opts.Image
	}
	if strings.ContainsAny(req.Image, " \t\n") {
		return req, fmt.Errorf("image %q is not an image reference: %w", req.Image, api.ErrInvalid)
	}
	if req.Agent == "" {
		req.Agent = "claude"
	}
	if req.Agent != "claude" && req.Agent != "codex" {
		return req, fmt.Errorf("agent %q is not claude or codex: %w", req.Agent, api.ErrInvalid)
	}
	if req.Profile == "" {
		req.Profile = "default"
	}
	if !profileRE.MatchString(req.Profile) {
		return req, fmt.Errorf("profile %q must be a-z 0-9 _ -, e.g. work: %w", req.Profile, api.ErrInvalid)
	}
	if req.Print && strings.TrimSpace(req.Prompt) == "" {
		return req, fmt.Errorf("print mode needs a prompt (--prompt): %w", api.ErrInvalid)
	}
	return req, nil
}

// agentCmd is the agent's argv (no shell: the prompt is one argument).
//
// Codex runs with --dangerously-bypass-approvals-and-sandbox, the
// counterpart of Claude's --dangerously-skip-permissions: the container is
// the sandbox (Codex's own, bubblewrap, cannot create namespaces under
// Docker's default seccomp profile). `codex exec` also gets
// --skip-git-repo-check (a --no-repo workspace is not a repository), and
// "--" before the prompt so that a prompt such as "review" or "login" is
// not taken for a Codex subcommand.
func agentCmd(req api.CreateRequest) []string {
	var cmd []string
	switch req.Agent {
	case "codex":
		cmd = []string{"codex"}
		if req.Print {
			cmd = append(cmd, "exec", "--skip-git-repo-check")
		}
		cmd = append(cmd, "--dangerously-bypass-approvals-and-sandbox")
	default:
		cmd = []string{"claude", "--dangerously-skip-permissions"}
		if req.Print {
			cmd = append(cmd, "--print", "--verbose")
		}
	}
	if req.Prompt != "" {
		// Claude's parser, too, would take a prompt starting with "-" for
		// an option ("-h is a flag" fails with "unknown option").
		cmd = append(cmd, "--", req.Prompt)
	}
	return cmd
}

// mountSpec is one bind mount from the state dir.
type mountSpec struct {
	Source, Target string
	ReadOnly       bool
}

// baseEnv is the container's own placeholders (suffix, see
// placeholder.go) plus CA variables, sorted.
func (m *Manager) baseEnv(home, suffix string) []string {
	var env []string
	for k, v := range m.placeholderEnv(suffix) {
		env = append(env, k+"="+v)
	}
	for _, k := range CAEnvVars {
		env = append(env, k+"="+ContainerBundlePath)
	}
	if home != "" {
		env = append(env, "HOME="+home)
	}
	sort.Strings(env)
	return env
}

// trustMounts are the CA certificate (at our path and the reference's) and
// the combined bundle, read-only, and the container's own claude.json
// (claudeJSON) read-write: claude rewrites it. claudeJSON is never shared
// between containers.
func (m *Manager) trustMounts(home, claudeJSON string) []mountSpec {
	return []mountSpec{
		{Source: m.bundlePath(), Target: ContainerBundlePath, ReadOnly: true},
		{Source: m.opts.CAPath, Target: ContainerCAPath, ReadOnly: true},
		{Source: m.opts.CAPath, Target: ReferenceCAPath, ReadOnly: true},
		{Source: claudeJSON, Target: filepath.Join(home, ".claude.json")},
	}
}

// sessionMounts adds the workspace (a repository session's clone) at the
// workdir, the uploads directory (at the reference's path and at /uploads),
// and the Codex dummy config read-only at the reference's path with a
// writable ~/.codex of the session's own seeded from it. The session's
// claude.json is state_dir/sessions/<name>/claude.json.
func (m *Manager) sessionMounts(req api.CreateRequest, home string) []mountSpec {
	ms := m.trustMounts(home, m.abs(filepath.Join(sessionDir(req.Name), claudeJSONName)))
	if req.Workspace != "" {
		ms = append(ms, mountSpec{Source: req.Workspace, Target: m.opts.Workdir})
	}
	ms = append(ms,
		mountSpec{Source: m.uploadsDir(req.Name), Target: uploadsIn(m.opts.Workdir)},
		mountSpec{Source: m.uploadsDir(req.Name), Target: ContainerUploads},
		mountSpec{Source: m.codexDir(), Target: ReferenceCodexDir, ReadOnly: true},
		mountSpec{Source: m.abs(sessionCodexDir(req.Name)), Target: filepath.Join(home, ".codex")},
	)
	return ms
}

func dockerMounts(ms []mountSpec) []mount.Mount {
	out := make([]mount.Mount, 0, len(ms))
	for _, s := range ms {
		out = append(out, mount.Mount{Type: mount.TypeBind, Source: s.Source, Target: s.Target, ReadOnly: s.ReadOnly})
	}
	return out
}

// containerSpec builds the container for a normalized request; the agent
// runs as user.
func (m *Manager) containerSpec(req api.CreateRequest, home, user, owner string) (*container.Config, *container.HostConfig) {
	interactive := !req.Print
	cfg := &container.Config{
		Image:        req.Image,
		Cmd:          agentCmd(req),
		Env:          append(m.baseEnv(home, m.placeholderSuffixFor(Provenance{Session: req.Name, Owner: owner}, "")), "DISABLE_AUTOUPDATER=1"),
		User:         user,
		WorkingDir:   m.opts.Workdir,
		Labels:       map[string]string{LabelSession: req.Name, LabelProfile: req.Profile},
		Tty:          interactive,
		OpenStdin:    interactive,
		AttachStdin:  interactive,
		AttachStdout: true,
		AttachStderr: true,
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(m.opts.Network),
		Mounts:      dockerMounts(m.sessionMounts(req, home)),
	}
	if m.opts.DNS != "" {
		hc.DNS = []string{m.opts.DNS}
	}
	return cfg, hc
}

// RunArgs returns the docker-run flags for `clauderon run`: network, the
// run's own placeholders (placeholder.go) and CA variables,
// CA/bundle/claude.json mounts, the profile and run labels. Every call gets a claude.json of its own, written fresh in
// state_dir/run/<random>/ (removed after a day, see cleanRunFiles), owned
// by the user the container runs as (req.User, else sessions.user; never
// root, which claude --dangerously-skip-permissions refuses). HOME is set
// to Options.Home so claude.json is found; user flags placed after these
// override them.
func (m *Manager) RunArgs(ctx context.Context, req api.RunRequest) (api.RunArgs, error) {
	if err := ctx.Err(); err != nil {
		return api.RunArgs{}, err
	}
	profile := req.Profile
	if profile == "" {
		profile = "default"
	}
	if !profileRE.MatchString(profile) {
		return api.RunArgs{}, fmt.Errorf("profile %q must be a-z 0-9 _ -, e.g. work: %w", profile, api.ErrInvalid)
	}
	user := req.User
	if user == "" {
		user = m.opts.User
	}
	if err := checkUser(user); err != nil {
		return api.RunArgs{}, err
	}
	if err := m.authorize(ctx, profile); err != nil {
		return api.RunArgs{}, err
	}
	if err := m.ensureSharedFiles(); err != nil {
		return api.RunArgs{}, err
	}
	runID, prov, err := m.newRun(ctx, m.callerOf(ctx), profile)
	if err != nil {
		return api.RunArgs{}, err
	}
	claudeJSON, err := m.newRunClaudeJSON(user)
	if err != nil {
		return api.RunArgs{}, err
	}
	args := []string{"--network", m.opts.Network, "--label", LabelProfile + "=" + profile, "--label", LabelRun + "=" + runID, "--user", user}
	if m.opts.DNS != "" {
		args = append(args, "--dns", m.opts.DNS)
	}
	for _, e := range m.baseEnv(m.opts.Home, prov.Placeholder) {
		args = append(args, "-e", e)
	}
	var sources []string
	for _, s := range m.trustMounts(m.opts.Home, claudeJSON) {
		sources = append(sources, s.Source)
	}
	m.setMounts(runID, sources)
	for _, s := range m.trustMounts(m.opts.Home, claudeJSON) {
		if strings.ContainsAny(s.Source+s.Target, ",\"") {
			return api.RunArgs{}, fmt.Errorf("path %q contains a comma or quote and cannot be passed to docker --mount; move state_dir", s.Source)
		}
		v := "type=bind,source=" + s.Source + ",target=" + s.Target
		if s.ReadOnly {
			v += ",readonly"
		}
		args = append(args, "--mount", v)
	}
	return api.RunArgs{Args: args}, nil
}
