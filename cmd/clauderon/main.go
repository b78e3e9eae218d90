// Command clauderon is the operator CLI of clauderond. It talks only to the
// daemon's Unix socket through appliance/api: it reads the daemon's config
// file only to find that socket (socket.path, state_dir), and never touches
// Docker's API, nftables or credentials itself. The two
// commands that need the docker CLI (attach, run) ask the daemon for what to
// do and then exec `docker`.
//
// Every command takes --json for scripts. Exit codes: 0 ok, 1 failure,
// 2 usage error, 3 daemon unreachable.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/envvars"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnreachable = 3
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ(), execDocker)
	stop()
	os.Exit(code)
}

// execFunc replaces the process with `docker args…` (tests record instead).
type execFunc func(args []string, env []string) error

func execDocker(args []string, env []string) error {
	path, err := exec.LookPath("docker")
	if err != nil {
		return fmt.Errorf("the docker CLI is needed for this command: %w", err)
	}
	return syscall.Exec(path, append([]string{"docker"}, args...), env)
}

// app is one CLI invocation's state.
type app struct {
	in          io.Reader
	out, errOut io.Writer
	env         map[string]string
	environ     []string
	exec        execFunc
	socket      string // --socket, then what resolveSocket found
	socketFrom  string // where socket came from, for error messages
	config      string // --config: the daemon's config file
	sysConfig   string // systemConfig outside tests
	json        bool
}

// usageError marks errors that exit 2.
type usageError struct{ error }

// exitError carries a specific exit code with an already-printed message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer, environ []string, ex execFunc) int {
	a := &app{in: in, out: out, errOut: errOut, env: envvars.Map(environ), environ: environ, exec: ex, sysConfig: systemConfig}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	err := root.ExecuteContext(ctx)
	return a.report(err)
}

// report prints err and returns the exit code.
func (a *app) report(err error) int {
	if err == nil {
		return exitOK
	}
	code, msg := exitFailure, err.Error()
	var ue usageError
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ue) || isCobraUsage(err):
		code = exitUsage
		msg += "\nrun 'clauderon --help' for usage"
	case errors.Is(err, api.ErrUnreachable):
		code = exitUnreachable
		msg = unreachableMessage(err, a.socket, a.socketFrom)
	case errors.Is(err, context.Canceled):
		return exitFailure
	}
	if msg != "" {
		fmt.Fprintln(a.errOut, "clauderon: "+msg)
	}
	if a.json && msg != "" {
		_ = json.NewEncoder(a.out).Encode(map[string]any{"error": msg, "exit_code": code})
	}
	return code
}

func unreachableMessage(err error, socket, from string) string {
	msg := fmt.Sprintf("cannot reach clauderond at %s: %v", socket, err)
	if from != "" {
		msg = fmt.Sprintf("cannot reach clauderond at %s (from %s): %v", socket, from, err)
	}
	if errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
		return msg + "\nthe socket is not yours: run with sudo, or join the daemon's socket.group (installed: `sudo usermod -aG clauderon $USER`, then log in again)"
	}
	return msg + "\nis clauderond running? try: sudo systemctl start clauderond (or pass --socket PATH / --config FILE)"
}

// isCobraUsage recognizes cobra's own argument and flag errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "required flag", "accepts ", "requires "} {
		if strings.HasPrefix(s, p) || strings.Contains(s, " "+p) {
			return true
		}
	}
	return false
}

// resolveSocket fills a.socket (once) from the flags, the environment and
// the daemon's config file.
func (a *app) resolveSocket() error {
	if a.socketFrom != "" {
		return nil
	}
	c, err := findSocket(a.socket, a.config, a.sysConfig, a.env)
	if err != nil {
		return err
	}
	a.socket, a.socketFrom = c.path, c.from
	return nil
}

func (a *app) client() *api.Client {
	return api.NewClientVerifying(a.socket, func(c net.Conn) error { return checkDaemonPeer(c, a.socket, os.Geteuid()) })
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "clauderon",
		Short: "Operate clauderond: agent sessions, status, audit, doctor",
		Long: `clauderon talks to the clauderond daemon over its Unix socket.

Agents run in containers on the clauderon network holding only placeholder
credentials; the daemon injects the real ones on the way to the real API.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 daemon unreachable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.resolveSocket()
		},
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "daemon socket (default $CLAUDERON_SOCKET, else socket.path or state_dir of the daemon's config file, else ~/.clauderon/clauderond.sock)")
	root.PersistentFlags().StringVar(&a.config, "config", "", "the daemon's config file, read for its socket (default $CLAUDERON_CONFIG, else "+systemConfig+" when it exists)")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "machine-readable JSON output")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.createCmd(), a.attachCmd(), a.listCmd(), a.logsCmd(), a.rmCmd(), a.runCmd(),
		a.controlCmd(api.ActionStop, "Stop a session's container (the session and its files stay)"),
		a.controlCmd(api.ActionStart, "Start a stopped session again"),
		a.controlCmd(api.ActionRestart, "Restart a session's container"),
		a.execCmd(), a.cpCmd(),
		a.statusCmd(), a.auditCmd(), a.doctorCmd(), a.caCmd(), a.reloadCmd(), a.versionCmd(), a.imageCmd())
	return root
}

// args wraps a cobra positional-args validator so failures exit 2.
func args(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := v(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// verdictCmd is a command that asks the daemon for a check's result, prints
// it (as JSON with --json, else through human) and, when ok says the check
// failed, exits 1 with no further message: the output says what is wrong.
func verdictCmd[T any](a *app, use, short string, fetch func(*api.Client, context.Context) (T, error), ok func(T) bool, human func(T)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := fetch(a.client(), cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				if err := a.printJSON(v); err != nil {
					return err
				}
			} else {
				human(v)
			}
			if !ok(v) {
				return &exitError{code: exitFailure}
			}
			return nil
		},
	}
}
