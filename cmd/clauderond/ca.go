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
	ca.AddCommand(rotate)
	return ca
}
