package main

import (
	"fmt"
	"time"

	"github.com/clauderon/clauderond/appliance"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/spf13/cobra"
)

// clauderond ca rotate|init|install: the local CA (see appliance.RotateCA,
// InitCA, InstallCA).
func init() {
	extraCommands = append(extraCommands, newCACommand)
}

// caRun is a ca subcommand's RunE: load the configuration, do, print.
func caRun(cfgFile *string, do func(*config.Config) (string, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, err := load(*cfgFile)
		if err != nil {
			return err
		}
		out, err := do(cfg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(cmd.OutOrStdout(), out)
		return err
	}
}

func newCACommand(cfgFile *string) *cobra.Command {
	ca := &cobra.Command{Use: "ca", Short: "Manage the local CA that containers trust", Args: cobra.NoArgs}
	var grace time.Duration
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the local CA root with one constrained to the configured rule hosts",
		Long: "Creates a new root and intermediate in state_dir, permitting only the registrable domains of the " +
			"configured rule hosts (no IP addresses). The previous root's key is overwritten; the previous root stays " +
			"in proxy-ca.pem, trusted by sessions created from now on, until the grace period ends. Restart clauderond " +
			"afterwards so it signs with the new root, and recreate sessions started before the rotation.",
		Args: cobra.NoArgs,
		RunE: caRun(cfgFile, func(cfg *config.Config) (string, error) { return appliance.RotateCA(cfg, grace) }),
	}
	rotate.Flags().DurationVar(&grace, "grace", appliance.DefaultCARotationGrace, "how long the previous root stays trusted")
	initCmd := caDirCommand(cfgFile, "init", "out", "Create a CA root in DIR for several nodes to share (Kubernetes: a Secret)",
		"directory for proxy-ca.pem and proxy-ca-key.pem (created 0700)", appliance.InitCA)
	install := caDirCommand(cfgFile, "install", "from", "Install the shared CA root from DIR (a mounted Secret) into state_dir; nothing when DIR holds none",
		"directory holding proxy-ca.pem and proxy-ca-key.pem", appliance.InstallCA)
	ca.AddCommand(rotate, initCmd, install)
	return ca
}

// caDirCommand is the ca subcommand `name --flag DIR` (the flag required),
// which hands the configuration and DIR to do.
func caDirCommand(cfgFile *string, name, flag, short, usage string, do func(*config.Config, string) (string, error)) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   name + " --" + flag + " DIR",
		Short: short,
		Args:  cobra.NoArgs,
		RunE:  caRun(cfgFile, func(cfg *config.Config) (string, error) { return do(cfg, dir) }),
	}
	cmd.Flags().StringVar(&dir, flag, "", usage)
	_ = cmd.MarkFlagRequired(flag)
	return cmd
}
