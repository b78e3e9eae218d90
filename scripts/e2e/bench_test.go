//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// latencyResult mirrors `e2etool latency` output.
type latencyResult struct {
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
}

func parseLatency(b *testing.B, out string) latencyResult {
	b.Helper()
	var r latencyResult
	for _, l := range lines(out) {
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &r) == nil {
			return r
		}
	}
	b.Fatalf("no latency result in:\n%s", out)
	return r
}

// BenchmarkE2E_InterceptLatency measures one intercepted POST /v1/messages
// from a container through clauderond (TLS termination, injection,
// re-encryption to the fake upstream) against the same client talking to
// the fake directly from the host. Run with a fixed count:
//
//	go test -tags e2e -run '^$' -bench E2E -benchtime 300x ./scripts/e2e/
func BenchmarkE2E_InterceptLatency(b *testing.B) {
	s := env(b)
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"keepalive", nil}, {"newconn", []string{"-new-conn"}}} {
		b.Run(mode.name, func(b *testing.B) {
			args := append([]string{"e2etool", "latency", "-n", strconv.Itoa(b.N)}, mode.flags...)
			via := s.dockerRun(b, "bench", s.manualCA(b), s.scratchImage,
				append(args, "-H", "Authorization: Bearer "+placeholder, "https://api.anthropic.com/v1/messages")...)
			if via.Err != nil {
				b.Fatalf("latency container: %v\n%s", via.Err, via.Output)
			}
			viaR := parseLatency(b, via.Output)
			cmd := exec.Command(filepath.Join(s.hostBin, "e2etool"), append(args[1:], "-connect", s.upstreamAddr("api.anthropic.com"),
				"-H", "Authorization: Bearer "+s.tokens["anthropic"], "https://api.anthropic.com/v1/messages")...)
			cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+s.caFile)
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("direct latency run: %v", err) // output may hold the token: not printed
			}
			direct := parseLatency(b, string(out))
			b.ReportMetric(viaR.P50*1e6, "ns/op")
			b.ReportMetric(viaR.P50, "p50-ms")
			b.ReportMetric(viaR.P99, "p99-ms")
			b.ReportMetric(direct.P50, "direct-p50-ms")
			b.ReportMetric(viaR.P50-direct.P50, "added-p50-ms")
		})
	}
}
