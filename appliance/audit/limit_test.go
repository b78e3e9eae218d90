package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeClock is a settable clock for the rate limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAttack_TenantCannotRotateEvidenceAway replays the attack: one
// container sends 10k requests with huge paths in 3.4 s to rotate the
// audit past the evidence another container left. The evidence must still
// be there, the flood's lines bounded, and the drop counted in a summary
// line and in Stats. (Unbounded and unlimited, the flood writes ~480 MiB:
// 20 times the 2 × 24 MiB kept here.)
func TestAttack_TenantCannotRotateEvidenceAway(t *testing.T) {
	clk := &fakeClock{t: sampleBase}
	w, path := openTest(t, Options{Key: testKey(t, 1), MaxBytes: 24 << 20, MaxBackups: 1, FlushInterval: time.Hour, now: clk.Now})
	evidence := sample(0)
	evidence.Container, evidence.ContainerID, evidence.Path = "victim", "feedface0001", "/evidence"
	w.Write(evidence)

	const requests = 10000
	huge := "/" + strings.Repeat("A", 8<<10)
	for range requests {
		r := sample(1)
		r.Container, r.ContainerID, r.SrcIP = "attacker", "", "10.213.0.66:40000"
		r.Path, r.Host, r.SNI, r.Method, r.Error = huge, huge, huge, huge, huge+huge
		w.Write(r)
		clk.Add(3400 * time.Millisecond / requests)
	}
	w.writeDropSummaries(true)

	got, err := Tail(path, 1<<20, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var sawEvidence bool
	var written, dropped uint64
	for _, r := range got {
		switch {
		case r.Path == "/evidence":
			sawEvidence = true
		case r.Decision == DecisionAuditDropped:
			if r.SrcIP != "10.213.0.66" || r.Container != "attacker" || !strings.Contains(r.Error, "dropped by the audit rate limit") {
				t.Errorf("summary line = %+v", r)
			}
			dropped += r.Dropped
		case r.Container == "attacker":
			written++
			if len(r.Path) > MaxFieldBytes || len(r.Error) > MaxErrorBytes || !strings.HasSuffix(r.Path, truncMark) {
				t.Fatalf("flood line not bounded: path %d bytes, error %d bytes", len(r.Path), len(r.Error))
			}
		}
	}
	if !sawEvidence {
		t.Fatal("the evidence was rotated away by one tenant's flood")
	}
	if st := w.Stats(); st.Rotations > 0 {
		t.Errorf("%d rotations: the flood rotated the log", st.Rotations)
	}
	// 2000 burst + 200/s × 3.4 s.
	if written < 2000 || written > 2700 {
		t.Errorf("%d flood lines written, want about 2680 (burst 2000 + 3.4 s × 200/s)", written)
	}
	if st := w.Stats(); dropped == 0 || dropped != st.RateLimited || written+dropped != requests {
		t.Errorf("dropped in summaries %d, Stats.RateLimited %d, written %d: want written+dropped = %d and the counts equal", dropped, st.RateLimited, written, requests)
	}
	if res := mustVerify(t, w); !res.OK {
		t.Errorf("Verify = %+v", res)
	}
}

// TestAudit_OwnLinesAndSourcelessLinesAreNeverLimited.
func TestAudit_OwnLinesAndSourcelessLinesAreNeverLimited(t *testing.T) {
	clk := &fakeClock{t: sampleBase}
	w, path := openTest(t, Options{Key: testKey(t, 1), RatePerSecond: 1, Burst: 1, FlushInterval: time.Hour, now: clk.Now})
	for range 50 {
		w.Write(Record{Decision: DecisionDeny}) // no container, no source
	}
	w.mu.Lock()
	for range 5 {
		w.chainStartLocked(ChainStartRotation, "x", "")
	}
	w.mu.Unlock()
	if st := w.Stats(); st.RateLimited != 0 || st.Written != 50 {
		t.Fatalf("Stats = %+v, want 50 written, none limited", st)
	}
	if n := len(readLines(t, path)); n != 56 {
		t.Errorf("%d lines, want 56", n)
	}
}

// TestAudit_OneDropSummaryPerSourceAndInterval: sources are budgeted
// apart (container ID, else the IP without port) and each over-budget
// source gets one summary line per interval, none when nothing dropped.
func TestAudit_OneDropSummaryPerSourceAndInterval(t *testing.T) {
	clk := &fakeClock{t: sampleBase}
	w, path := openTest(t, Options{RatePerSecond: 10, Burst: 5, FlushInterval: time.Hour, now: clk.Now})
	send := func(id, ip string, n int) {
		for range n {
			w.Write(Record{ContainerID: id, SrcIP: ip, Decision: DecisionIntercept})
		}
	}
	send("aaaa", "10.0.0.2", 8)  // 3 over
	send("", "10.0.0.3:1000", 4) // same IP, two ports:
	send("", "10.0.0.3:2000", 4) // 3 over
	send("", "10.0.0.4:1", 5)    // at the budget: no summary
	w.writeDropSummaries(false)  // not an interval yet
	clk.Add(time.Second)
	w.writeDropSummaries(false)
	w.writeDropSummaries(false) // nothing new
	clk.Add(100 * time.Millisecond)
	send("aaaa", "10.0.0.2", 7) // refilled to the burst: 2 over
	clk.Add(time.Second)
	w.writeDropSummaries(false)

	var sums []Record
	got, _ := Tail(path, 1000, Filter{Decision: DecisionAuditDropped})
	sums = append(sums, got...)
	want := map[string][]uint64{"aaaa": {3, 2}, "10.0.0.3": {3}}
	have := map[string][]uint64{}
	for _, r := range sums {
		key := r.ContainerID
		if key == "" {
			key = r.SrcIP
		}
		have[key] = append(have[key], r.Dropped)
	}
	if len(have) != len(want) || len(have["aaaa"]) != 2 || have["aaaa"][0] != 3 || have["aaaa"][1] != 2 || len(have["10.0.0.3"]) != 1 || have["10.0.0.3"][0] != 3 {
		t.Errorf("summaries = %v, want %v", have, want)
	}
	if st := w.Stats(); st.RateLimited != 8 {
		t.Errorf("RateLimited = %d, want 8", st.RateLimited)
	}
}

// TestRecord_EveryFieldIsBounded: whatever a producer hands in, no string
// field passes its bound, the cut is marked, and a secret across the cut
// is redacted rather than written in part.
func TestRecord_EveryFieldIsBounded(t *testing.T) {
	const secret = "ghp_SECRETSECRETSECRETSECRET"
	scrub := func(s string) string { return strings.ReplaceAll(s, secret, "[REDACTED]") }
	w, path := openTest(t, Options{Scrub: scrub})
	big := strings.Repeat("é", 1000) + secret + strings.Repeat("x", 100<<10) // the secret straddles 1 KiB
	w.Write(Record{Container: big, ContainerID: big, Profile: big, Kind: big, SrcIP: big, OrigDst: big, SNI: big,
		Host: big, Method: big, Path: big, Decision: big, Rule: big, QType: big, RCode: big, PrevFile: big, PrevChain: big, Error: big})
	w.Close()
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte("ghp_")) {
		t.Fatal("part of the secret reached the file")
	}
	lines := readLines(t, path)
	for k, v := range lines[0] {
		s, ok := v.(string)
		if !ok || k == "ts" {
			continue
		}
		limit := MaxFieldBytes
		if k == "error" {
			limit = MaxErrorBytes
		}
		if len(s) > limit || !strings.HasSuffix(s, truncMark) || !utf8.ValidString(s) {
			t.Errorf("%s: %d bytes (bound %d), marked %v, valid UTF-8 %v", k, len(s), limit, strings.HasSuffix(s, truncMark), utf8.ValidString(s))
		}
	}
}

// TestAudit_FileHasNoRawControlOrBidiCharacters: `tail audit.jsonl` on a
// terminal cannot be steered; the values still decode as sent.
func TestAudit_FileHasNoRawControlOrBidiCharacters(t *testing.T) {
	w, path := openTest(t, Options{KeepQuery: true})
	evil := "/x\x1b[1A\x1b[2K\r\n\x1b]0;owned\x07\x7f\u0085\u009b2J\u202eevil\u2066\u2028\u2029\ufeff\U000e0041ok"
	w.Write(Record{Path: evil, SNI: evil, Host: evil, Container: evil, Error: evil})
	w.Close()
	b, _ := os.ReadFile(path)
	for i, r := range string(b[:len(b)-1]) {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e || r == 0x2066 || r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0xe0041 {
			t.Fatalf("raw %U at byte %d of the line", r, i)
		}
	}
	var got Record
	if err := json.Unmarshal(b, &got); err != nil || got.Path != evil || got.SNI != evil || got.Error != evil {
		t.Errorf("values do not round-trip: %v %q", err, got.Path)
	}
}
