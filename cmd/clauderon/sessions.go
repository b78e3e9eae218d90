package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/spf13/cobra"
)

// createOpts are `clauderon create`'s flags beyond the request.
type createOpts struct {
	repo   string
	noRepo bool
	detach bool
}

func (a *app) createCmd() *cobra.Command {
	var req api.CreateRequest
	var o createOpts
	cmd := &cobra.Command{
		Use:   "create --name NAME --prompt PROMPT [--repo PATH] [--print]",
		Short: "Start an agent session in a container on the clauderon network",
		Long: `create starts an agent (Claude Code, or Codex with --agent codex) in a container on the
clauderon network, holding only placeholder credentials.

With --repo PATH (default: the current directory when it is a git repository) the
session works on a clone of that repository, on branch clauderon/NAME, mounted at
/workspace; your repository itself is never mounted. The branch comes back into your
repository when a --print session ends and on 'clauderon rm'.

With --print the agent runs once: its output streams to your terminal and clauderon
exits with the agent's exit code (Ctrl-C stops the session). --detach returns at once.`,
		Example: `  clauderon create --name fix-tests --prompt 'make the tests pass'      # in a git repository
  clauderon create --name q --repo ~/src/app --print --prompt 'summarize README.md'
  clauderon create --name scratch --no-repo --prompt 'hello'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.create(cmd.Context(), req, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "session name (container clauderon-NAME, branch clauderon/NAME)")
	f.StringVar(&req.Prompt, "prompt", "", "the task for the agent")
	f.StringVar(&req.Image, "image", "", "agent image (default sessions.image; build it with: sudo clauderon image build)")
	f.BoolVar(&req.Print, "print", false, "non-interactive: run once, stream the output, exit with the agent's code")
	f.BoolVar(&o.detach, "detach", false, "with --print: return at once (output in clauderon logs NAME)")
	f.StringVar(&req.Agent, "agent", "claude", "agent: claude or codex")
	f.StringVar(&req.Profile, "profile", "", "credential profile (default \"default\")")
	f.StringVar(&o.repo, "repo", "", "git repository the session works on (default: the current directory when it is one)")
	f.BoolVar(&o.noRepo, "no-repo", false, "start with an empty /workspace even inside a git repository")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) create(ctx context.Context, req api.CreateRequest, o createOpts) error {
	repo, err := a.sessionRepo(ctx, o)
	if err != nil {
		return err
	}
	if repo != nil {
		ws, err := a.client().PrepareWorkspace(ctx, req.Name)
		if err != nil {
			return err
		}
		req.Branch = "clauderon/" + req.Name
		if err := cloneInto(ctx, *repo, ws, req.Branch); err != nil {
			return fmt.Errorf("preparing the session's clone of %s: %w", repo.top, err)
		}
		req.Workspace, req.Repo = ws.Path, repo.top
	}
	se, err := a.client().CreateSession(ctx, req)
	if err != nil {
		return err
	}
	if a.json && (!se.Print || o.detach) {
		return a.printJSON(se)
	}
	if !a.json {
		fmt.Fprintf(a.errOut, "created session %s (container %s, image %s, agent %s, profile %s)\n", se.Name, se.Container, se.Image, se.Agent, se.Profile)
		if se.Branch != "" {
			fmt.Fprintf(a.errOut, "working on a clone of %s, branch %s\n", se.Repo, se.Branch)
		}
	}
	switch {
	case se.Print && o.detach:
		fmt.Fprintf(a.out, "output: clauderon logs %s -f\n", se.Name)
	case se.Print:
		return a.followPrint(ctx, se)
	default:
		fmt.Fprintf(a.out, "attach: clauderon attach %s   (detach: Ctrl-P Ctrl-Q)\n", se.Name)
	}
	return nil
}

// sessionRepo picks the repository: --repo, else the current directory
// when it is a git work tree, else none.
func (a *app) sessionRepo(ctx context.Context, o createOpts) (*repoInfo, error) {
	if o.noRepo {
		if o.repo != "" {
			return nil, usageError{errors.New("--repo and --no-repo contradict each other")}
		}
		return nil, nil
	}
	p := o.repo
	if p == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, nil
		}
		if _, err := git(ctx, "-C", wd, "rev-parse", "--show-toplevel"); err != nil {
			return nil, nil // not in a repository: a session without one
		}
		p = wd
	}
	r, err := inspectRepo(ctx, p)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// followPrint streams a print session's output until the agent exits,
// brings its branch back, and exits with the agent's code. Ctrl-C (or
// SIGTERM) stops the session and still waits for it.
func (a *app) followPrint(ctx context.Context, se api.Session) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-sig:
			fmt.Fprintf(a.errOut, "\nclauderon: stopping session %s\n", se.Name)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_, _ = a.client().ControlSession(sctx, se.Name, api.ActionStop)
		case <-stopped:
		}
	}()
	defer close(stopped)
	if err := a.client().SessionLogs(ctx, se.Name, true, a.out); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	final, err := a.waitExited(ctx, se.Name)
	if err != nil {
		return err
	}
	if err := fetchBack(ctx, final); err != nil {
		fmt.Fprintf(a.errOut, "clauderon: %v (the work is still in %s)\n", err, final.Workspace)
	} else if final.Branch != "" {
		fmt.Fprintf(a.errOut, "clauderon: the session's commits are on branch %s in %s\n", final.Branch, final.Repo)
	}
	if a.json {
		if err := a.printJSON(final); err != nil {
			return err
		}
	}
	if final.ExitCode != 0 {
		return &exitError{code: final.ExitCode, msg: ""}
	}
	return nil
}

// waitExited polls the session until its container is no longer running
// (the log stream ends a moment before Docker reports the exit).
func (a *app) waitExited(ctx context.Context, name string) (api.Session, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		se, err := a.findSession(ctx, name)
		if err != nil {
			return se, err
		}
		if se.State != "running" && se.State != "created" && se.State != "restarting" {
			return se, nil
		}
		if time.Now().After(deadline) {
			return se, fmt.Errorf("session %s still %s 60s after its output ended", name, se.State)
		}
		select {
		case <-ctx.Done():
			return se, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *app) controlCmd(action, short string) *cobra.Command {
	return &cobra.Command{
		Use:               action + " NAME",
		ValidArgsFunction: a.completeSessions,
		Short:             short,
		Args:              args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			se, err := a.client().ControlSession(cmd.Context(), argv[0], action)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(se)
			}
			fmt.Fprintf(a.out, "session %s: %s\n", se.Name, se.State)
			return nil
		},
	}
}

func (a *app) execCmd() *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:               "exec NAME [--user U] -- COMMAND [ARG...]",
		ValidArgsFunction: a.completeSessions,
		Short:             "Run a command in a running session (docker exec), as the session's user",
		Args:              args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			se, err := a.runningSession(cmd.Context(), argv[0], "start it with: clauderon start")
			if err != nil {
				return err
			}
			if user == "" {
				user = se.User
			}
			full := []string{"exec", "-i"}
			if isTerminal(os.Stdin) && isTerminal(os.Stdout) {
				full = append(full, "-t")
			}
			if user != "" {
				full = append(full, "--user", user)
			}
			full = append(append(full, se.Container), argv[1:]...)
			return a.exec(full, a.environ)
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user to run as (default: the session's)")
	return cmd
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// uploadsPath is the uploads directory as every session container sees it.
const uploadsPath = "/uploads"

func (a *app) cpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC NAME:[PATH] | NAME:PATH DST",
		Short: "Copy a file or directory into or out of a session's uploads directory",
		Long: `cp copies into or out of the session's uploads directory, which the agent sees at
/workspace/.clauderon/uploads (and /uploads). NAME:PATH is relative to it.`,
		Example: `  clauderon cp spec.pdf fix-tests:
  clauderon cp fix-tests:report.md .`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			src, dst, err := a.cpArgs(cmd.Context(), argv[0], argv[1])
			if err != nil {
				return err
			}
			return a.exec([]string{"cp", src, dst}, a.environ)
		},
	}
}

// cpArgs turns NAME:PATH into the container's path under the uploads
// directory; exactly one side names a session.
func (a *app) cpArgs(ctx context.Context, from, to string) (src, dst string, err error) {
	sessionSide := func(s string) (name, p string, ok bool) {
		name, p, ok = strings.Cut(s, ":")
		if !ok || name == "" || strings.Contains(name, "/") {
			return "", "", false
		}
		return name, p, true
	}
	fn, fp, fromSession := sessionSide(from)
	tn, tp, toSession := sessionSide(to)
	if fromSession == toSession {
		return "", "", usageError{errors.New("cp needs exactly one NAME:PATH side, e.g. clauderon cp file.txt mysession:")}
	}
	name, p := fn, fp
	if toSession {
		name, p = tn, tp
	}
	clean := path.Clean("/" + p)
	if strings.Contains(p, "..") {
		return "", "", usageError{fmt.Errorf("path %q leaves the uploads directory", p)}
	}
	se, err := a.findSession(ctx, name)
	if err != nil {
		return "", "", err
	}
	inContainer := se.Container + ":" + path.Join(uploadsPath, clean)
	if toSession {
		if clean == "/" {
			inContainer = se.Container + ":" + uploadsPath + "/"
		}
		return from, inContainer, nil
	}
	return inContainer, to, nil
}

// runUser is the --user/-u value among docker-run flags ("" when none), so
// the daemon gives that user the run's claude.json.
func runUser(dockerArgs []string) string {
	for i, a := range dockerArgs {
		switch {
		case a == "--":
			return ""
		case (a == "-u" || a == "--user") && i+1 < len(dockerArgs):
			return dockerArgs[i+1]
		case strings.HasPrefix(a, "--user="):
			return strings.TrimPrefix(a, "--user=")
		case strings.HasPrefix(a, "-u") && len(a) > 2 && !strings.HasPrefix(a, "--"):
			return strings.TrimPrefix(strings.TrimPrefix(a, "-u"), "=")
		}
	}
	return ""
}
