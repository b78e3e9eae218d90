package session

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
)

// StateGone is a session whose container was removed behind our back.
const StateGone = "gone"

// Create starts a new session container and records it. A request with a
// Workspace (a repository session) mounts that clone at the workdir and
// runs the agent as the clone's owner; others run as sessions.user.
func (m *Manager) Create(ctx context.Context, req api.CreateRequest) (api.Session, error) {
	req, err := m.normalize(req)
	if err != nil {
		return api.Session{}, err
	}
	if err := m.authorize(ctx, req.Profile); err != nil {
		return api.Session{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.st.get(ctx, req.Name); err == nil {
		return api.Session{}, fmt.Errorf("session %q: %w (remove it with: clauderon rm %s)", req.Name, api.ErrConflict, req.Name)
	}
	user := m.opts.User
	if req.Workspace != "" {
		if user, err = m.workspaceFor(ctx, req); err != nil {
			return api.Session{}, err
		}
	}
	home, err := m.homeFor(ctx, req.Image)
	if err != nil {
		return api.Session{}, err
	}
	if err := m.prepareSessionFiles(req, user); err != nil {
		m.removeSessionDir(req.Name)
		return api.Session{}, err
	}
	se, err := m.createContainer(ctx, req, home, user, m.callerOf(ctx))
	if err != nil {
		m.removeSessionDir(req.Name)
		return api.Session{}, err
	}
	m.log.Info("session created", "session", se.Name, "container", se.Container, "image", se.Image, "agent", se.Agent,
		"profile", se.Profile, "print", se.Print, "repo", se.Repo, "user", se.User)
	return se, nil
}

// prepareSessionFiles writes what the session's mounts need: the shared
// trust bundle and Codex config, its uploads dir, its claude.json and its
// ~/.codex, all for user.
func (m *Manager) prepareSessionFiles(req api.CreateRequest, user string) error {
	if err := m.ensureSharedFiles(); err != nil {
		return err
	}
	if err := m.ensureUploads(req.Name, user); err != nil {
		return err
	}
	if _, err := m.writePrivateClaudeJSON(sessionDir(req.Name), user); err != nil {
		return err
	}
	return m.seedCodex(req.Name, user)
}

// createContainer creates, records and starts the container; on failure it
// removes what it made.
func (m *Manager) createContainer(ctx context.Context, req api.CreateRequest, home, user string, owner caller) (api.Session, error) {
	cfg, hc := m.containerSpec(req, home, user, owner.name)
	// A token of its own in the run label: Docker's authorization plugin
	// (appliance/authz) lets clauderond's labels through only with one.
	token, err := m.expectRun(Provenance{Owner: owner.name, Profile: req.Profile, Session: req.Name})
	if err != nil {
		return api.Session{}, err
	}
	cfg.Labels[LabelRun] = token
	var sources []string
	for _, mt := range hc.Mounts {
		sources = append(sources, mt.Source)
	}
	m.setMounts(token, sources)
	name := ContainerName(req.Name)
	resp, err := m.opts.Docker.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		return api.Session{}, translateCreateErr(err, name, req.Image)
	}
	se := api.Session{Name: req.Name, Container: name, Image: req.Image, Agent: req.Agent, Profile: req.Profile,
		Prompt: req.Prompt, Print: req.Print, State: "created", CreatedAt: time.Now().UTC(),
		Workspace: req.Workspace, Repo: req.Repo, User: user, Owner: owner.name, OwnerUID: owner.uid, ContainerID: resp.ID}
	if req.Workspace != "" {
		se.Branch = BranchName(req.Name)
	}
	undo := func(cause error) (api.Session, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = m.opts.Docker.ContainerRemove(cctx, resp.ID, container.RemoveOptions{Force: true})
		_ = m.st.delete(cctx, req.Name)
		return api.Session{}, cause
	}
	if err := m.st.insert(ctx, se); err != nil {
		return undo(err)
	}
	m.recordSessionContainer(se)
	if err := m.prepareHome(ctx, resp.ID, home, user); err != nil {
		return undo(err)
	}
	if err := m.opts.Docker.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		return undo(fmt.Errorf("starting container %s: %w", name, err))
	}
	if err := m.makeHooksDir(ctx, resp.ID, user); err != nil {
		m.log.Warn("creating hooks dir failed; the session runs without it", "session", req.Name, "err", err)
	}
	se.State = "running"
	if err := m.st.setState(ctx, se.Name, se.State, 0); err != nil {
		return api.Session{}, err
	}
	return se, nil
}

func translateCreateErr(err error, name, image string) error {
	switch {
	case errdefs.IsConflict(err):
		return fmt.Errorf("container %s already exists (not a recorded session); remove it with: docker rm -f %s: %w", name, name, api.ErrConflict)
	case errdefs.IsNotFound(err):
		return fmt.Errorf("image %s not found locally (sessions never pull): %v; %s: %w", image, err, buildHint(image), api.ErrInvalid)
	default:
		return fmt.Errorf("creating container %s: %w", name, err)
	}
}

// buildHint says how to get a missing image.
func buildHint(img string) string {
	if img == "clauderon-agent:latest" || img == "clauderon-agent" {
		return "build it with: sudo clauderon image build"
	}
	return "build or load it first, or layer the agents onto it with: sudo clauderon image build --from " + img + " --tag " + img
}

// homeFor is the image's HOME if it sets one, else Options.Home.
func (m *Manager) homeFor(ctx context.Context, img string) (string, error) {
	ii, err := m.opts.Docker.ImageInspect(ctx, img)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", fmt.Errorf("image %s not found locally (sessions never pull); %s: %w", img, buildHint(img), api.ErrInvalid)
		}
		return "", fmt.Errorf("inspecting image %s: %w", img, err)
	}
	if ii.Config != nil {
		for _, e := range ii.Config.Env {
			if h, ok := strings.CutPrefix(e, "HOME="); ok && strings.HasPrefix(h, "/") && h != "/" {
				return h, nil
			}
		}
	}
	return m.opts.Home, nil
}

// prepareHome creates $HOME owned by the numeric session user before the
// container starts, so claude can write ~/.claude next to the mounted
// ~/.claude.json (Docker would otherwise create the mount's parent as root).
func (m *Manager) prepareHome(ctx context.Context, id, home, user string) error {
	uid, gid, ok := numericIDs(user)
	if !ok {
		return nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(home, "/") + "/", Mode: 0o755, Uid: uid, Gid: gid, ModTime: time.Now()}); err != nil {
		return fmt.Errorf("building home dir archive: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("building home dir archive: %w", err)
	}
	if err := m.opts.Docker.CopyToContainer(ctx, id, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("creating %s in the container: %w", home, err)
	}
	return nil
}

// makeHooksDir creates <workdir>/.clauderon/hooks in the running container
// (as root, then handed to the session's user).
func (m *Manager) makeHooksDir(ctx context.Context, id, user string) error {
	dir := strings.TrimSuffix(m.opts.Workdir, "/") + "/.clauderon/hooks"
	if err := m.exec(ctx, id, []string{"mkdir", "-p", dir}); err != nil {
		return err
	}
	return m.exec(ctx, id, []string{"chown", user, m.opts.Workdir + "/.clauderon", dir})
}

func (m *Manager) exec(ctx context.Context, id string, cmd []string) error {
	ex, err := m.opts.Docker.ContainerExecCreate(ctx, id, container.ExecOptions{User: "0", Cmd: cmd})
	if err != nil {
		return fmt.Errorf("exec %v: %w", cmd, err)
	}
	if err := m.opts.Docker.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{Detach: true}); err != nil {
		return fmt.Errorf("exec %v: %w", cmd, err)
	}
	for {
		in, err := m.opts.Docker.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return fmt.Errorf("exec %v: %w", cmd, err)
		}
		if !in.Running {
			if in.ExitCode != 0 {
				return fmt.Errorf("exec %v: exit code %d", cmd, in.ExitCode)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// List returns all sessions with their current container state.
func (m *Manager) List(ctx context.Context) ([]api.Session, error) {
	if err := m.Reconcile(ctx); err != nil {
		return nil, err
	}
	all, err := m.st.list(ctx)
	if err != nil {
		return nil, err
	}
	c := m.callerOf(ctx)
	out := all[:0]
	for _, se := range all {
		if c.sees(se) {
			out = append(out, se)
		}
	}
	return out, nil
}

// Get returns one session with its current state.
func (m *Manager) Get(ctx context.Context, name string) (api.Session, error) {
	se, err := m.visible(ctx, name)
	if err != nil {
		return se, err
	}
	return m.refresh(ctx, se)
}

// Reconcile refreshes every session's state from Docker; a session whose
// container is gone gets State "gone".
func (m *Manager) Reconcile(ctx context.Context) error {
	ss, err := m.st.list(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, se := range ss {
		if _, err := m.refresh(ctx, se); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) refresh(ctx context.Context, se api.Session) (api.Session, error) {
	state, code := StateGone, se.ExitCode
	in, err := m.opts.Docker.ContainerInspect(ctx, se.Container)
	switch {
	case err == nil && in.ContainerJSONBase != nil && in.State != nil:
		state, code = in.State.Status, in.State.ExitCode
	case err != nil && !errdefs.IsNotFound(err):
		return se, fmt.Errorf("inspecting container %s: %w", se.Container, err)
	}
	if state != se.State || code != se.ExitCode {
		if state == StateGone && se.State != StateGone {
			m.log.Warn("session container removed outside clauderon", "session", se.Name, "container", se.Container)
		}
		se.State, se.ExitCode = state, code
		if err := m.st.setState(ctx, se.Name, state, code); err != nil {
			return se, err
		}
	}
	return se, nil
}

// Remove force-removes the session's container and forgets the session,
// with its claude.json (state_dir/sessions/<name>). The uploads directory is
// kept (it is the user's data).
func (m *Manager) Remove(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	se, err := m.visible(ctx, name)
	if err != nil {
		return err
	}
	err = m.opts.Docker.ContainerRemove(ctx, se.Container, container.RemoveOptions{Force: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %s: %w", se.Container, err)
	}
	if err := m.st.delete(ctx, name); err != nil {
		return err
	}
	m.removeSessionDir(name)
	m.forgetContainer(se.ContainerID)
	if se.Workspace != "" {
		m.removeWorkspace(name)
	}
	m.log.Info("session removed", "session", name, "container", se.Container)
	return nil
}

// Control stops, starts or restarts the session's container and returns
// the session's new state. Stopping gives the agent 10 s to exit on
// SIGTERM.
func (m *Manager) Control(ctx context.Context, name, action string) (api.Session, error) {
	se, err := m.visible(ctx, name)
	if err != nil {
		return se, err
	}
	timeout := 10
	switch action {
	case api.ActionStop:
		err = m.opts.Docker.ContainerStop(ctx, se.Container, container.StopOptions{Timeout: &timeout})
	case api.ActionStart:
		err = m.opts.Docker.ContainerStart(ctx, se.Container, container.StartOptions{})
	case api.ActionRestart:
		err = m.opts.Docker.ContainerRestart(ctx, se.Container, container.StopOptions{Timeout: &timeout})
	default:
		return se, fmt.Errorf("session action %q is not stop, start or restart: %w", action, api.ErrInvalid)
	}
	if errdefs.IsNotFound(err) {
		return se, fmt.Errorf("session %q: container %s is gone; remove the session with: clauderon rm %s: %w", name, se.Container, name, api.ErrNotFound)
	}
	if err != nil {
		return se, fmt.Errorf("%s container %s: %w", action, se.Container, err)
	}
	m.log.Info("session "+action, "session", name, "container", se.Container)
	return m.refresh(ctx, se)
}

// Logs copies the session container's output to w (both streams); with
// follow it streams until the container stops or ctx is done.
func (m *Manager) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	se, err := m.visible(ctx, name)
	if err != nil {
		return err
	}
	in, err := m.opts.Docker.ContainerInspect(ctx, se.Container)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("session %q: container %s is gone; its logs went with it: %w", name, se.Container, api.ErrNotFound)
		}
		return fmt.Errorf("inspecting container %s: %w", se.Container, err)
	}
	rc, err := m.opts.Docker.ContainerLogs(ctx, se.Container, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return fmt.Errorf("reading logs of %s: %w", se.Container, err)
	}
	defer rc.Close()
	if in.Config != nil && in.Config.Tty {
		_, err = io.Copy(w, rc)
	} else {
		_, err = stdcopy.StdCopy(w, w, rc)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("copying logs of %s: %w", se.Container, err)
	}
	return ctx.Err()
}
