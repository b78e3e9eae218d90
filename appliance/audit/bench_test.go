package audit

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkWrite measures one audit line end to end (limit, scrub, encode,
// append) from parallel callers, as the proxy produces them, without the
// chain.
func BenchmarkWrite(b *testing.B) { benchWrite(b, nil) }

// BenchmarkWriteChained is BenchmarkWrite with the chain MAC, as the
// daemon runs it.
func BenchmarkWriteChained(b *testing.B) {
	k, _ := NewKey(bytes.Repeat([]byte{7}, KeySize))
	benchWrite(b, k)
}

func benchWrite(b *testing.B, key *Key) {
	w, err := Open(filepath.Join(b.TempDir(), "audit.jsonl"), Options{
		Scrub: strings.NewReplacer("ghp_secret", "[REDACTED]", "sk-ant-oat01-secret", "[REDACTED]").Replace,
		Key:   key,
		// The budget is checked on every line but never reached.
		RatePerSecond: 1e12, Burst: 1 << 40,
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
