package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// The probe runs inside the throwaway container `clauderon doctor` starts
// (the daemon's own static binary imported as an image): it makes one HTTPS
// request the way an agent would, trusting only the mounted bundle, and
// prints the outcome as "probe: …" lines that doctor parses.
func init() {
	extraCommands = append(extraCommands, func(*string) *cobra.Command { return newProbeCommand() })
}

// Probe output prefixes parsed by appliance/doctor.
const (
	probeStatusPrefix = "probe: status "
	probeTLSPrefix    = "probe: tls verification failed: "
	probeFailPrefix   = "probe: failed: "
)

func newProbeCommand() *cobra.Command {
	var timeout time.Duration
	var caFile string
	cmd := &cobra.Command{
		Use:    "probe URL",
		Short:  "Make one HTTPS request trusting only the given bundle (used by clauderon doctor)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if caFile == "" {
				caFile = os.Getenv("SSL_CERT_FILE")
			}
			if caFile == "" {
				caFile = "/etc/ssl/certs/ca-certificates.crt"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return runProbe(ctx, cmd.OutOrStdout(), args[0], caFile)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 20*time.Second, "give up after this long (connection errors are retried until then)")
	cmd.Flags().StringVar(&caFile, "ca-file", "", "PEM bundle to trust (default $SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt)")
	return cmd
}

// runProbe retries connection errors (the daemon may not know the container
// yet) but not TLS verification errors or HTTP responses.
func runProbe(ctx context.Context, out io.Writer, url, caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Fprintf(out, "%sreading trust bundle: %v\n", probeFailPrefix, err)
		return fmt.Errorf("probe: reading trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintf(out, "%sno certificates in %s\n", probeFailPrefix, caFile)
		return fmt.Errorf("probe: no certificates in %s", caFile)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: false, // agents (claude) speak HTTP/1.1
		DisableKeepAlives: true,
	}}
	fmt.Fprintf(out, "probe: GET %s (trusting %s)\n", url, caFile)
	for {
		status, issuer, err := probeOnce(ctx, client, url)
		if err == nil {
			fmt.Fprintf(out, "probe: tls verified, certificate issued by %q\n", issuer)
			fmt.Fprintf(out, "%s%d\n", probeStatusPrefix, status)
			return nil
		}
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			fmt.Fprintf(out, "%s%v\n", probeTLSPrefix, verr.Err)
			return fmt.Errorf("probe: tls verification failed: %w", verr.Err)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "%s%v\n", probeFailPrefix, err)
			return fmt.Errorf("probe: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func probeOnce(ctx context.Context, client *http.Client, url string) (status int, issuer string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("User-Agent", "clauderon-probe/1")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		issuer = resp.TLS.PeerCertificates[0].Issuer.String()
	}
	return resp.StatusCode, issuer, nil
}
