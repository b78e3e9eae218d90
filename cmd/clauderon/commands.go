package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/spf13/cobra"
)

// completeSessions offers session names from the daemon for shell completion.
func (a *app) completeSessions(cmd *cobra.Command, argv []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(argv) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if a.resolveSocket() != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	ss, err := a.client().ListSessions(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		names = append(names, s.Name+"\t"+s.State)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// findSession returns the named session or a not-found error listing names.
func (a *app) findSession(ctx context.Context, name string) (api.Session, error) {
	ss, err := a.client().ListSessions(ctx)
	if err != nil {
		return api.Session{}, err
	}
	var names []string
	for _, s := range ss {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return api.Session{}, fmt.Errorf("no session %q (there are no sessions; create one with clauderon create)", name)
	}
	return api.Session{}, fmt.Errorf("no session %q (sessions: %s)", name, strings.Join(names, ", "))
}

// runningSession returns the named session when its container runs, else an
// error ending in next, the command that helps (it is given the name).
func (a *app) runningSession(ctx context.Context, name, next string) (api.Session, error) {
	se, err := a.findSession(ctx, name)
	if err != nil {
		return api.Session{}, err
	}
	if se.State != "running" {
		return api.Session{}, fmt.Errorf("session %s is %s, not running; %s %s", se.Name, se.State, next, se.Name)
	}
	return se, nil
}

func (a *app) attachCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "attach NAME",
		ValidArgsFunction: a.completeSessions,
		Short:             "Attach your terminal to an interactive session (docker attach)",
		Args:              args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			se, err := a.runningSession(cmd.Context(), argv[0], "see its output with: clauderon logs")
			if err != nil {
				return err
			}
			return a.exec([]string{"attach", se.Container}, a.environ)
		},
	}
}

func (a *app) listCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sessions",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ss, err := a.client().ListSessions(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				if ss == nil {
					ss = []api.Session{}
				}
				return a.printJSON(ss)
			}
			return writeSessions(a.out, ss)
		},
	}
}

func (a *app) logsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:               "logs NAME",
		ValidArgsFunction: a.completeSessions,
		Short:             "Print a session's output",
		Args:              args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			err := a.client().SessionLogs(cmd.Context(), argv[0], follow, a.out)
			if follow && errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming until the session ends")
	return cmd
}

func (a *app) rmCmd() *cobra.Command {
	var force, deleteBranch bool
	cmd := &cobra.Command{
		Use:               "rm NAME",
		ValidArgsFunction: a.completeSessions,
		Short:             "Remove a session, its container and its workspace (its branch stays in your repository)",
		Args:              args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			se, err := a.findSession(cmd.Context(), argv[0])
			if err != nil {
				return err
			}
			if owner := se.OwnerUID; se.Repo != "" && owner != "" && owner != invokingUID() {
				// Fetching into another user's repository (as root, under
				// sudo) would write where that user chose; its owner does it.
				if !force {
					return fmt.Errorf("session %s belongs to %s; its owner brings its branch back with clauderon rm %s. rm -f removes it anyway (the work in %s is lost)",
						se.Name, se.Owner, se.Name, se.Workspace)
				}
				fmt.Fprintf(a.errOut, "not fetching branch %s: the session belongs to %s\n", se.Branch, se.Owner)
			} else if err := a.keepOrDropBranch(cmd.Context(), se, deleteBranch); err != nil && !force {
				return fmt.Errorf("%w\nnothing removed; rm -f removes the session anyway (its work in %s is lost)", err, se.Workspace)
			}
			if err := a.client().RemoveSession(cmd.Context(), argv[0]); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]string{"removed": argv[0]})
			}
			fmt.Fprintf(a.out, "removed session %s\n", argv[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even when the session's branch cannot be brought back")
	cmd.Flags().BoolVar(&deleteBranch, "delete-branch", false, "also delete branch clauderon/NAME from your repository")
	return cmd
}

// keepOrDropBranch fetches a repository session's branch back into the
// repository before its workspace goes, or deletes it with --delete-branch.
func (a *app) keepOrDropBranch(ctx context.Context, se api.Session, deleteBranch bool) error {
	if se.Repo == "" || se.Branch == "" {
		return nil
	}
	if deleteBranch {
		if _, err := git(ctx, "-C", se.Repo, "branch", "-D", se.Branch); err != nil && !strings.Contains(err.Error(), "not found") {
			return err
		}
		return nil
	}
	if err := fetchBack(ctx, se); err != nil {
		return err
	}
	fmt.Fprintf(a.errOut, "branch %s is in %s\n", se.Branch, se.Repo)
	return nil
}

func (a *app) runCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run [--profile P] [docker run flags] IMAGE [COMMAND [ARG...]]",
		Short: "docker run with the clauderon network, CA trust and placeholder credentials",
		Long: `run execs 'docker run' with the flags the daemon supplies (--network, placeholder
credentials, CA bundle and variables, claude.json, the profile label, and
--user sessions.user, since claude --dangerously-skip-permissions refuses root)
placed before your own flags, which can override them. With your own --user
the claude.json is given to that user.`,
		Example:            `  clauderon run --rm -it -v "$PWD:/workspace" -w /workspace node:22 npm test`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, argv []string) error {
			profile, rest, err := a.splitRunArgs(argv)
			if err != nil {
				return err
			}
			if rest == nil {
				return cmd.Help()
			}
			ra, err := a.client().RunArgs(cmd.Context(), api.RunRequest{Profile: profile, User: runUser(rest)})
			if err != nil {
				return err
			}
			full := append(append([]string{"run"}, ra.Args...), rest...)
			if a.json {
				return a.printJSON(map[string][]string{"docker": full})
			}
			return a.exec(full, a.environ)
		},
	}
}

// splitRunArgs takes clauderon's own leading options (--profile, --socket,
// --json: flag parsing is off so docker's flags pass through untouched).
// rest is nil when help was asked for.
func (a *app) splitRunArgs(argv []string) (profile string, rest []string, err error) {
	rest = []string{}
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		name, value, hasValue := strings.Cut(arg, "=")
		switch {
		case arg == "-h" || arg == "--help":
			return "", nil, nil
		case arg == "--json":
			a.json = true
		case name == "--profile" || name == "--socket":
			if !hasValue {
				if i+1 >= len(argv) {
					return "", nil, usageError{fmt.Errorf("%s needs a value", name)}
				}
				value = argv[i+1]
				i++
			}
			if name == "--profile" {
				profile = value
			} else {
				a.socket, a.socketFrom = value, "--socket"
			}
		default:
			rest = append(rest, argv[i:]...)
			if len(rest) == 0 {
				return "", nil, usageError{errors.New("run needs an IMAGE")}
			}
			return profile, rest, nil
		}
	}
	return "", nil, usageError{errors.New("run needs an IMAGE (usage: clauderon run [docker run flags] IMAGE [COMMAND])")}
}

func (a *app) statusCmd() *cobra.Command {
	return verdictCmd(a, "status", "Show the daemon's state; exits 0 once it is ready", (*api.Client).Status,
		func(st api.Status) bool { return st.Ready },
		func(st api.Status) {
			writeStatus(a.out, st)
			if st.Enforcement != api.EnforcementIntact {
				fmt.Fprintf(a.errOut, "clauderon: WARNING: enforcement is %s: containers' traffic may not be fully controlled; run: sudo systemctl reload clauderond\n", strings.ToUpper(orUnknown(st.Enforcement)))
			}
		})
}

func (a *app) auditCmd() *cobra.Command {
	var q api.AuditQuery
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show audit records (one per request or refused connection)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Lines < 0 {
				return usageError{errors.New("-n must not be negative")}
			}
			var w io.Writer = a.out
			var hw *auditWriter
			if !a.json {
				hw = &auditWriter{out: a.out}
				w = hw
			}
			err := a.client().Audit(cmd.Context(), q, w)
			if hw != nil {
				hw.flush()
			}
			if q.Follow && errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep streaming new records")
	f.StringVar(&q.Container, "container", "", "only this container (name or ID prefix)")
	f.StringVar(&q.Host, "host", "", "only this host")
	f.IntVarP(&q.Lines, "lines", "n", 50, "last N matching records (0: all)")
	cmd.AddCommand(a.auditVerifyCmd())
	return cmd
}

// auditWriter turns JSON lines into human lines as they stream.
type auditWriter struct {
	out     io.Writer
	partial []byte
}

func (w *auditWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := w.partial[:i]
		w.partial = w.partial[i+1:]
		if _, err := io.WriteString(w.out, formatAuditLine(line)+"\n"); err != nil {
			return len(p), err
		}
	}
}

func (w *auditWriter) flush() {
	if len(w.partial) > 0 {
		_, _ = io.WriteString(w.out, formatAuditLine(w.partial)+"\n")
		w.partial = nil
	}
}

func (a *app) doctorCmd() *cobra.Command {
	return verdictCmd(a, "doctor", "Check the whole path end to end; exits 1 if a step fails", (*api.Client).Doctor,
		api.DoctorReport.OK, func(rep api.DoctorReport) { writeDoctor(a.out, rep) })
}

func (a *app) caCmd() *cobra.Command {
	var pemOnly bool
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the local CA containers must trust",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := a.client().CA(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case a.json:
				return a.printJSON(ca)
			case pemOnly:
				_, err := io.WriteString(a.out, ca.PEM)
				return err
			}
			fmt.Fprintf(a.out, "path:        %s\nfingerprint: %s\n", ca.Path, ca.Fingerprint)
			fmt.Fprintln(a.out, "trust it elsewhere with: clauderon ca --pem > clauderon-ca.pem")
			return nil
		},
	}
	cmd.Flags().BoolVar(&pemOnly, "pem", false, "print the certificate in PEM form")
	return cmd
}

func (a *app) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the daemon re-read its config and credentials (like SIGHUP)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.client().Reload(cmd.Context()); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]bool{"reloaded": true})
			}
			fmt.Fprintln(a.out, "reloaded")
			return nil
		},
	}
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the CLI version",
		Args:  args(cobra.NoArgs),
		Run: func(cmd *cobra.Command, _ []string) {
			if a.json {
				_ = a.printJSON(map[string]string{"version": version})
				return
			}
			fmt.Fprintln(a.out, "clauderon", version)
		},
	}
}
