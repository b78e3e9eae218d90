package main

import (
	"fmt"
	"time"

	"github.com/clauderon/clauderond/appliance"
	"github.com/spf13/cobra"
)

// clauderond ca rotate: replace the local CA root (see appliance.RotateCA).
func init() {
	extraCommands = append(extraCommands, newCACommand)
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(*cfgFile)
			if err != nil {
				return err
			}
			out, err := appliance.RotateCA(cfg, grace)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), out)
			return err
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", appliance.DefaultCARotationGrace, "how long the previous root stays trusted")
	var out, from string
	initCmd := &cobra.Command{
		Use:   "init --out DIR",
		Short: "Create a CA root in DIR for several nodes to share (Kubernetes: a Secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(*cfgFile)
			if err != nil {
				return err
			}
			msg, err := appliance.InitCA(cfg, out)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), msg)
			return err
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "directory for proxy-ca.pem and proxy-ca-key.pem (created 0700)")
	_ = initCmd.MarkFlagRequired("out")
	install := &cobra.Command{
		Use:   "install --from DIR",
		Short: "Install the shared CA root from DIR (a mounted Secret) into state_dir; nothing when DIR holds none",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(*cfgFile)
			if err != nil {
				return err
			}
			msg, err := appliance.InstallCA(cfg, from)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), msg)
			return err
		},
	}
	install.Flags().StringVar(&from, "from", "", "directory holding proxy-ca.pem and proxy-ca-key.pem")
	_ = install.MarkFlagRequired("from")
	ca.AddCommand(rotate, initCmd, install)
	return ca
}
