// Command clauderond is the clauderon daemon: it owns the agents' Docker
// bridge, its nftables rules, the TLS terminator and the DNS shim (see
// package appliance, which does all the work).
//
// This package only turns flags, the config file and signals into a
// config.Config, a context and reload triggers; it never talks to the parts
// (netfilter, tlsmitm, dnsredir, injector) itself.
//
//	clauderond [--config FILE]   run in the foreground until SIGTERM/SIGINT; SIGHUP reloads
//	clauderond config            print the effective configuration
//	clauderond teardown          remove the Docker network and the nftables rules
//	clauderond version           print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clauderon/clauderond/appliance"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "clauderond:", err)
		os.Exit(1)
	}
}

// newRootCmd builds the command tree. Subcommands in other files (for
// example a hidden probe for doctor) register themselves through extraCommands.
func newRootCmd() *cobra.Command {
	var cfgFile string
	root := &cobra.Command{
		Use:           "clauderond",
		Short:         "Run the clauderon daemon in the foreground",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), cfgFile)
		},
	}
	root.PersistentFlags().StringVar(&cfgFile, "config", "", "config file (default "+config.SystemFile+" if present)")
	root.AddCommand(
		&cobra.Command{Use: "config", Short: "Print the effective configuration (no secrets)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, err := load(cfgFile)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(cmd.OutOrStdout(), cfg.Redacted())
				return err
			}},
		&cobra.Command{Use: "teardown", Short: "Remove the Docker network and the nftables rules (on purpose)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, err := load(cfgFile)
				if err != nil {
					return err
				}
				return appliance.Teardown(cmd.Context(), cfg, appliance.NewLogger(cfg.Log, os.Stderr))
			}},
		&cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "clauderond", version) }},
	)
	for _, c := range extraCommands {
		root.AddCommand(c(&cfgFile))
	}
	return root
}

// extraCommands lets other files of this package add subcommands.
var extraCommands []func(cfgFile *string) *cobra.Command

func load(file string) (*config.Config, error) {
	cfg, err := config.Load(config.LoadOptions{File: file})
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

// runDaemon runs until SIGTERM or SIGINT; SIGHUP re-reads the config file
// and the credentials (a bad file keeps the running configuration).
func runDaemon(parent context.Context, cfgFile string) error {
	cfg, err := load(cfgFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloads := make(chan struct{}, 1)
	go forwardSignals(ctx, hup, reloads)
	logger := appliance.NewLogger(cfg.Log, os.Stderr).With("version", version)
	err = appliance.Run(ctx, cfg, logger,
		appliance.WithReload(func() (*config.Config, error) { return load(cfgFile) }, reloads),
		appliance.WithVersion(version))
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// forwardSignals turns SIGHUPs into reload triggers (coalescing bursts).
func forwardSignals(ctx context.Context, in <-chan os.Signal, out chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in:
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}
}
