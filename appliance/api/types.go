// Package api owns the daemon's control API: the JSON wire types, the Backend
// interface the daemon implements, an http.Handler that serves a Backend, and a
// Client that speaks to that handler over the daemon's Unix socket.
//
// It refuses to know how anything is done: it imports only the standard
// library (no Docker, nftables, viper or certmagic), holds no state, and never
// carries a credential value — credentials appear only as kind, source and
// fingerprint. The handler maps errors to status codes once (see Error); the
// client turns them back into *Error values carrying the server's message.
package api

import (
	"context"
	"io"
	"time"
)

// Backend is what the daemon implements; the CLI reaches it through Client.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	CreateSession(ctx context.Context, req CreateRequest) (Session, error)
	ListSessions(ctx context.Context) ([]Session, error)
	RemoveSession(ctx context.Context, name string) error
	// ControlSession stops, starts or restarts a session's container
	// (ActionStop, ActionStart, ActionRestart) and returns its new state.
	ControlSession(ctx context.Context, name, action string) (Session, error)
	// PrepareWorkspace makes the directory a repository session's clone
	// goes in, owned by the caller.
	PrepareWorkspace(ctx context.Context, name string) (Workspace, error)
	// SessionLogs copies the session container's output to w; with follow it
	// streams until the container stops or ctx is done.
	SessionLogs(ctx context.Context, name string, follow bool, w io.Writer) error
	// RunArgs returns the docker-run flags `clauderon run` prepends: --network,
	// -e placeholders and CA variables, CA and claude.json mounts, labels.
	RunArgs(ctx context.Context, req RunRequest) (RunArgs, error)
	Doctor(ctx context.Context) (DoctorReport, error)
	CA(ctx context.Context) (CA, error)
	// Audit writes matching audit.jsonl lines (one JSON object per line) to w;
	// with q.Follow it keeps streaming new lines until ctx is done.
	Audit(ctx context.Context, q AuditQuery, w io.Writer) error
	Reload(ctx context.Context) error
}

// Status is the daemon's health and configuration summary.
type Status struct {
	Ready    bool   `json:"ready"`
	Version  string `json:"version"`
	StateDir string `json:"state_dir"`
	Socket   string `json:"socket"`
	// Mode is egress.mode: "enforce" or "audit".
	Mode      string     `json:"mode"`
	Network   Network    `json:"network"`
	Listeners []Listener `json:"listeners"`
	// Enforcement is "intact" when the kernel ruleset matches the desired one,
	// "degraded" otherwise (Drift lists the differences).
	Enforcement string       `json:"enforcement"`
	Drift       []string     `json:"drift,omitempty"`
	Counters    []Counter    `json:"counters"`
	Credentials []Credential `json:"credentials"`
	Containers  []Container  `json:"containers"`
	CA          CA           `json:"ca"`
	// Requests counts audit decisions (intercept, passthrough, deny, …).
	Requests map[string]uint64 `json:"requests"`
	// Problems explains, in operator words, why the daemon is not ready or
	// degraded (empty when all is well).
	Problems []string `json:"problems,omitempty"`
}

// Enforcement values.
const (
	EnforcementIntact   = "intact"
	EnforcementDegraded = "degraded"
)

// Network is the dedicated Docker bridge.
type Network struct {
	Name    string `json:"name"`
	Bridge  string `json:"bridge"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
}

// Listener is one of the daemon's listeners (tls, dns, metrics, api).
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	OK      bool   `json:"ok"`
}

// Counter is one nftables rule counter, named by the rule's comment.
type Counter struct {
	Rule    string `json:"rule"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Credential describes a configured credential without its value.
type Credential struct {
	Profile     string `json:"profile"`
	Name        string `json:"name"`
	Source      string `json:"source"`      // e.g. "env:CLAUDE_CODE_OAUTH_TOKEN", "file:secrets/anthropic"
	Kind        string `json:"kind"`        // e.g. "anthropic-oauth", "anthropic-api-key", "github-token", "unknown"
	Fingerprint string `json:"fingerprint"` // short sha256 prefix; never the value
	Present     bool   `json:"present"`
}

// Container is a container attached to the bridge, as identity knows it.
type Container struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	IP      string `json:"ip"`
	Profile string `json:"profile"`
	// OtherNetworks lists the container's networks besides ours (or its
	// host/container network mode): such a container has a way out that
	// skips the rules, so it is never given a credential.
	OtherNetworks []string `json:"other_networks,omitempty"`
	// Owner is who created it through clauderond ("" for a container made
	// some other way); NoCredential says why it gets no credential.
	Owner        string `json:"owner,omitempty"`
	NoCredential string `json:"no_credential,omitempty"`
}

// CA is the local certificate authority's public side. PEM is filled only by
// Backend.CA, not in Status.
type CA struct {
	Path        string `json:"path"`
	Fingerprint string `json:"fingerprint"`
	PEM         string `json:"pem,omitempty"`
}

// Session is a `clauderon create` agent session.
type Session struct {
	Name      string    `json:"name"`
	Container string    `json:"container"`
	Image     string    `json:"image"`
	Agent     string    `json:"agent"` // claude|codex
	Profile   string    `json:"profile"`
	Prompt    string    `json:"prompt"`
	State     string    `json:"state"` // created|running|exited|gone|…(Docker's state, or "gone")
	Print     bool      `json:"print"`
	ExitCode  int       `json:"exit_code"`
	CreatedAt time.Time `json:"created_at"`
	// Workspace is the host directory mounted at the session's workdir (a
	// git worktree of Repo on Branch); "" for a session without one.
	Workspace string `json:"workspace,omitempty"`
	Repo      string `json:"repo,omitempty"`
	Branch    string `json:"branch,omitempty"`
	// User is the uid:gid the agent runs as.
	User string `json:"user,omitempty"`
	// Owner is the user who created the session (its socket peer), by
	// name; OwnerUID by uid. Only the owner and administrators see it.
	Owner    string `json:"owner,omitempty"`
	OwnerUID string `json:"owner_uid,omitempty"`
	// ContainerID is the session container's full ID.
	ContainerID string `json:"container_id,omitempty"`
}

// CreateRequest asks for a new session. Empty Image, Agent, Profile take the
// daemon's defaults (sessions.image, "claude", "default").
type CreateRequest struct {
	Name    string `json:"name"`
	Prompt  string `json:"prompt"`
	Image   string `json:"image,omitempty"`
	Agent   string `json:"agent,omitempty"`
	Profile string `json:"profile,omitempty"`
	Print   bool   `json:"print,omitempty"`
	// Workspace is a git worktree the caller prepared (absolute host
	// path, owned by the caller), mounted read-write at the workdir; the
	// agent then runs as its owner. Repo and Branch are recorded for
	// `list` and `rm` and must match the worktree.
	Workspace string `json:"workspace,omitempty"`
	Repo      string `json:"repo,omitempty"`
	Branch    string `json:"branch,omitempty"`
}

// Workspace is the directory the daemon prepared for a repository
// session (POST /v1/sessions/{name}/workspace): the caller clones its
// repository into Path, which belongs to UID:GID.
type Workspace struct {
	Path string `json:"path"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// Session lifecycle actions (POST /v1/sessions/{name}/{action}).
const (
	ActionStop    = "stop"
	ActionStart   = "start"
	ActionRestart = "restart"
)

// RunRequest asks for the docker-run flags of `clauderon run`.
type RunRequest struct {
	Profile string `json:"profile,omitempty"`
	// User is the uid[:gid] the container will run as ("" → sessions.user);
	// its claude.json is given to that user.
	User string `json:"user,omitempty"`
}

// RunArgs are docker-run flags, to be placed before the user's own flags.
type RunArgs struct {
	Args []string `json:"args"`
}

// DoctorReport is the result of the daemon's self-check.
type DoctorReport struct {
	Steps []DoctorStep `json:"steps"`
}

// OK reports whether every step passed.
func (r DoctorReport) OK() bool {
	for _, s := range r.Steps {
		if !s.OK {
			return false
		}
	}
	return len(r.Steps) > 0
}

// DoctorStep is one check: what was checked, the outcome, and the fix.
type DoctorStep struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// AuditQuery selects audit lines. Lines is how many of the most recent
// matching lines to return first (0 → all); Follow keeps streaming.
type AuditQuery struct {
	Follow    bool   `json:"follow,omitempty"`
	Container string `json:"container,omitempty"`
	Host      string `json:"host,omitempty"`
	Lines     int    `json:"lines,omitempty"`
}

// AuditVerifier is implemented by backends that can check the audit
// chain (the daemon, and Client). It is apart from Backend so that
// backends without it still satisfy Backend; the handler answers 501 for
// them.
type AuditVerifier interface {
	// AuditVerify checks every audit line's chain MAC, in order, across
	// the rotated files, and that the last line the daemon wrote is there.
	AuditVerify(ctx context.Context) (AuditVerification, error)
}

// AuditVerification is the result of GET /v1/audit/verify. OK is false
// when any line was altered, removed, inserted or reordered, or the tail
// was cut; FirstBad locates the first such problem.
type AuditVerification struct {
	OK        bool     `json:"ok"`
	Files     []string `json:"files"` // oldest first
	Lines     int      `json:"lines"` // chained lines verified
	Unchained int      `json:"unchained,omitempty"`
	// FirstBad is the first problem: Line is 1-based, 0 for a missing file.
	FirstBad *AuditBadLine `json:"first_bad,omitempty"`
}

// AuditBadLine locates the first problem Verify found.
type AuditBadLine struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}
