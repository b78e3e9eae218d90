package audit

import (
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkWrite measures one audit line end to end (scrub, encode, append)
// from parallel callers, as the proxy produces them.
func BenchmarkWrite(b *testing.B) {
	w, err := Open(filepath.Join(b.TempDir(), "audit.jsonl"), Options{
		Scrub: strings.NewReplacer("ghp_secret", "[REDACTED]", "sk-ant-oat01-secret", "[REDACTED]").Replace,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := sample(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(r)
		}
	})
}
