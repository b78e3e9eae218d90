package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"go.uber.org/goleak"
)

func openTest(t *testing.T, opts Options) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	w, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w, path
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// readLines returns the file's lines, failing on any that is not a JSON
// object.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not a JSON object: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("file does not end in a newline")
	}
	return out
}

var sampleBase = time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)

// sample is record number i (i < 3600); every sample encodes to the same
// length, and idx recovers i.
func sample(i int) Record {
	return Record{
		TS: sampleBase.Add(time.Duration(i) * time.Second), Container: "c1", ContainerID: "0123456789abcdef",
		SrcIP: "10.213.0.2:41000", SNI: "api.anthropic.com", Host: "api.anthropic.com", Method: "POST",
		Path: "/v1/messages", Status: 200, Decision: DecisionIntercept, Rule: "api.anthropic.com",
		AuthInjected: true, DurationMS: 12.5, Kind: KindHTTP,
	}
}

func idx(r Record) int { return int(r.TS.Sub(sampleBase) / time.Second) }

func TestRecord_RequiredFieldsAlwaysPresent(t *testing.T) {
	w, path := openTest(t, Options{})
	w.Write(Record{Decision: DecisionDeny})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	for _, k := range []string{"ts", "container", "src_ip", "sni", "host", "method", "path", "status", "decision", "rule", "auth_injected", "duration_ms", "error"} {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("field %q missing from %v", k, lines[0])
		}
	}
	for _, k := range []string{"orig_dst", "profile", "kind", "bytes_in", "bytes_out", "container_id", "qtype", "rcode"} {
		if _, ok := lines[0][k]; ok {
			t.Errorf("optional field %q present although empty", k)
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, lines[0]["ts"].(string))
	if err != nil || time.Since(ts) > time.Minute || !strings.HasSuffix(lines[0]["ts"].(string), "Z") {
		t.Errorf("ts = %v (%v), want now in UTC", lines[0]["ts"], err)
	}
}

func TestRecord_RoundTrip(t *testing.T) {
	w, path := openTest(t, Options{KeepQuery: true})
	in := sample(1)
	in.OrigDst, in.Profile, in.BytesIn, in.BytesOut, in.Error = "1.2.3.4:443", "team-a", 10, 20, "upstream: EOF"
	in.Path = "/v1/x?y=1"
	w.Write(in)
	w.Close()
	got, err := Tail(path, 1, Filter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("Tail = %v, %v", got, err)
	}
	if got[0] != in {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0], in)
	}
}

// TestWriter_ConcurrentWritersNoLossNoTear: 50 goroutines × 200 records;
// every line is a whole JSON object and the count is exact.
func TestWriter_ConcurrentWritersNoLossNoTear(t *testing.T) {
	const writers, each = 50, 200
	w, path := openTest(t, Options{FlushInterval: 5 * time.Millisecond, RatePerSecond: -1})
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := sample(i)
				r.Container = fmt.Sprintf("w%02d", g)
				r.Path = fmt.Sprintf("/%d/%s", i, strings.Repeat("x", i)) // varied lengths cross buffer boundaries
				w.Write(r)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	perWriter := map[string]int{}
	for _, l := range lines {
		perWriter[l["container"].(string)]++
	}
	for g := range writers {
		if n := perWriter[fmt.Sprintf("w%02d", g)]; n != each {
			t.Errorf("writer %d: %d lines, want %d", g, n, each)
		}
	}
	if st := w.Stats(); st.Written != writers*each || st.Failed != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestWriter_FileMode0600(t *testing.T) {
	old := syscallUmask(0)
	defer syscallUmask(old)
	_, path := openTest(t, Options{})
	assertMode(t, path, 0o600)

	// An existing looser file is tightened.
	loose := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(loose, []byte(`{"decision":"deny"}`+"\n"), 0o644)
	w, err := Open(loose, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	assertMode(t, loose, 0o600)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s mode = %04o, want %04o", path, fi.Mode().Perm(), want)
	}
}

func TestOpen_ParentDirMustExist(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "audit.jsonl"), Options{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open under a missing dir = %v, want a does-not-exist error", err)
	}
}

func TestWriter_AppendsToExistingFile(t *testing.T) {
	w, path := openTest(t, Options{})
	w.Write(sample(1))
	w.Close()
	w2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Write(sample(2))
	w2.Close()
	if n := len(readLines(t, path)); n != 2 {
		t.Fatalf("%d lines after reopen, want 2", n)
	}
}

// TestWriter_RecordIsInTheFileWhenWriteReturns: no flush, no Close, no
// timer: the line is readable by the time Write returns.
func TestWriter_RecordIsInTheFileWhenWriteReturns(t *testing.T) {
	w, path := openTest(t, Options{FlushInterval: time.Hour})
	for i := range 3 {
		w.Write(sample(i))
		if n := len(readLines(t, path)); n != i+1 {
			t.Fatalf("%d lines in the file after Write %d returned, want %d", n, i, i+1)
		}
	}
}

// TestWriter_RecordSurvivesKill9: a daemon killed with SIGKILL right after
// it recorded a request (right after answering) loses no audit line. The
// writer runs in a child process that is killed without any chance to
// flush.
func TestWriter_RecordSurvivesKill9(t *testing.T) {
	if path := os.Getenv("CLAUDERON_AUDIT_KILL_CHILD"); path != "" {
		w, err := Open(path, Options{FlushInterval: time.Hour})
		if err != nil {
			os.Exit(3)
		}
		for i := range 5 {
			w.Write(sample(i))
		}
		os.Stdout.WriteString("written\n")
		select {} // wait for SIGKILL
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriter_RecordSurvivesKill9$")
	cmd.Env = append(os.Environ(), "CLAUDERON_AUDIT_KILL_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if line != "written\n" {
		t.Fatalf("child said %q, want \"written\"", line)
	}
	if n := len(readLines(t, path)); n != 5 {
		t.Fatalf("%d audit lines after SIGKILL, want all 5", n)
	}
}

func TestWriter_CloseAndWritesAfterCloseAreCounted(t *testing.T) {
	w, path := openTest(t, Options{FlushInterval: time.Hour})
	for i := range 10 {
		w.Write(sample(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, path)); n != 10 {
		t.Fatalf("%d lines after Close, want 10", n)
	}
	w.Write(sample(11))
	w.Write(sample(12))
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want the first result (nil)", err)
	}
	if st := w.Stats(); st.AfterClose != 2 || st.Written != 10 {
		t.Errorf("Stats = %+v, want Written 10, AfterClose 2", st)
	}
	if n := len(readLines(t, path)); n != 10 {
		t.Errorf("%d lines, writes after Close reached the file", n)
	}
	if err := w.Flush(); err != nil {
		t.Errorf("Flush after Close = %v", err)
	}
}

func TestWriter_Rotation(t *testing.T) {
	line := len(mustLine(t, sample(0)))
	w, path := openTest(t, Options{MaxBytes: int64(line*10 + 1), MaxBackups: 2})
	for i := range 45 {
		w.Write(sample(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, name := range []string{path, path + ".1", path + ".2"} {
		lines := readLines(t, name)
		if len(lines) > 10 {
			t.Errorf("%s has %d lines, want at most 10", name, len(lines))
		}
		assertMode(t, name, 0o600)
		total += len(lines)
	}
	if total != 25 {
		t.Errorf("%d lines kept across file and 2 backups, want 25 (5 current + 10 + 10)", total)
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("path.3 exists: MaxBackups not honoured")
	}
	if st := w.Stats(); st.Rotations != 4 {
		t.Errorf("Rotations = %d, want 4", st.Rotations)
	}
	// The newest records are in the current file, the oldest kept in .2.
	got, err := Tail(path, 25, Filter{})
	if err != nil || len(got) != 25 {
		t.Fatalf("Tail across rotation = %d records, %v", len(got), err)
	}
	for i, r := range got {
		if idx(r) != 20+i {
			t.Fatalf("Tail[%d] is record %d, want %d (oldest first across backups)", i, idx(r), 20+i)
		}
	}
}

func TestWriter_RotationWithoutBackups(t *testing.T) {
	line := len(mustLine(t, sample(0)))
	w, path := openTest(t, Options{MaxBytes: int64(line * 3), MaxBackups: -1})
	for i := range 7 {
		w.Write(sample(i))
	}
	w.Close()
	if n := len(readLines(t, path)); n != 1 {
		t.Errorf("%d lines, want 1 (7 records, 3 per file, no backups)", n)
	}
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Errorf("backup kept although MaxBackups < 0")
	}
}

func mustLine(t *testing.T, r Record) []byte {
	t.Helper()
	b, err := json.Marshal(r.scrubbed(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestSecrets_NeverInAudit: the Scrub option runs over every string field
// and query strings are dropped by default.
func TestSecrets_NeverInAudit(t *testing.T) {
	const secret = "ghp_SECRETSECRETSECRET"
	scrub := func(s string) string { return strings.ReplaceAll(s, secret, "[REDACTED]") }
	w, path := openTest(t, Options{Scrub: scrub})
	r := Record{Container: secret, ContainerID: secret, Profile: secret, Kind: secret, SrcIP: secret, OrigDst: secret,
		SNI: secret, Host: secret, Method: secret, Path: "/x/" + secret + "?token=" + secret, Decision: secret,
		Rule: secret, QType: secret, RCode: secret, Error: "upstream said Bearer " + secret}
	w.Write(r)
	w2, path2 := openTest(t, Options{})
	w2.Write(Record{Path: "/login?access_token=abc123&x=1"})
	w.Close()
	w2.Close()
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte("SECRET")) {
		t.Fatalf("audit line leaks the secret: %s", b)
	}
	if n := bytes.Count(b, []byte("[REDACTED]")); n != 15 {
		t.Errorf("%d redactions, want 15 (one per string field): %s", n, b)
	}
	b2, _ := os.ReadFile(path2)
	if bytes.Contains(b2, []byte("abc123")) || !bytes.Contains(b2, []byte(`"path":"/login"`)) {
		t.Errorf("query string kept: %s", b2)
	}
}

func TestWriter_NewlinesInFieldsStayOnOneLine(t *testing.T) {
	w, path := openTest(t, Options{})
	w.Write(Record{Error: "line1\nline2\r\n{\"fake\":true}", Path: "/a\nb"})
	w.Close()
	if n := len(readLines(t, path)); n != 1 {
		t.Fatalf("%d lines, want 1", n)
	}
}

// TestWriter_FollowsMovedFile: when the file is moved (logrotate) or
// removed, records written before the move stay in the moved file and later
// ones land in a new file at path; none is lost.
func TestWriter_FollowsMovedFile(t *testing.T) {
	for _, remove := range []bool{false, true} {
		t.Run(map[bool]string{false: "moved", true: "removed"}[remove], func(t *testing.T) {
			w, path := openTest(t, Options{FlushInterval: 5 * time.Millisecond})
			w.Write(sample(1))
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if remove {
				os.Remove(path)
			} else if err := os.Rename(path, path+".moved"); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for _, err := os.Stat(path); err != nil; _, err = os.Stat(path) {
				if time.Now().After(deadline) {
					t.Fatal("writer did not recreate the file")
				}
				time.Sleep(5 * time.Millisecond)
			}
			w.Write(sample(2))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			assertMode(t, path, 0o600)
			if got := readLines(t, path); len(got) != 1 || got[0]["ts"] != sample(2).TS.Format(time.RFC3339Nano) {
				t.Errorf("new file has %v, want record 2 only", got)
			}
			if !remove {
				if n := len(readLines(t, path+".moved")); n != 1 {
					t.Errorf("%d lines in the moved file, want 1", n)
				}
			}
		})
	}
}

func TestFilter(t *testing.T) {
	r := sample(0)
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty_matches", Filter{}, true},
		{"container_name", Filter{Container: "c1"}, true},
		{"container_id_prefix", Filter{Container: "0123"}, true},
		{"container_short_id_prefix_ignored", Filter{Container: "012"}, false},
		{"container_other", Filter{Container: "c2"}, false},
		{"host_exact_case_insensitive", Filter{Host: "API.anthropic.com"}, true},
		{"host_wildcard", Filter{Host: "*.anthropic.com"}, true},
		{"host_wildcard_not_bare", Filter{Host: "*.api.anthropic.com"}, false},
		{"host_other", Filter{Host: "api.openai.com"}, false},
		{"decision", Filter{Decision: DecisionIntercept}, true},
		{"decision_other", Filter{Decision: DecisionDeny}, false},
		{"all", Filter{Container: "c1", Host: "api.anthropic.com", Decision: DecisionIntercept}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Match(r); got != tt.want {
				t.Errorf("%+v.Match = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
	owned := sample(0)
	owned.Owner = "alice"
	if !(Filter{Owner: "alice"}).Match(owned) || (Filter{Owner: "bob"}).Match(owned) || (Filter{Owner: "bob"}).Match(r) {
		t.Errorf("an owner filter shows only that owner's lines")
	}
	sniOnly := Record{SNI: "github.com", Kind: KindConn}
	if !(Filter{Host: "github.com"}).Match(sniOnly) {
		t.Errorf("Host filter does not match SNI of a connection record")
	}
}

func TestTail(t *testing.T) {
	w, path := openTest(t, Options{RatePerSecond: -1})
	for i := range 3000 { // > one 64 KiB read block
		r := sample(i)
		if i%3 == 0 {
			r.Container = "other"
		}
		w.Write(r)
	}
	w.Close()
	// Garbage and a partial last line are skipped.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("not json\n{\"container\":\"c1\",\"ts\":\"2026")
	f.Close()
	got, err := Tail(path, 5, Filter{Container: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []int{2993, 2995, 2996, 2998, 2999} // 2994 and 2997 are "other"
	if len(got) != len(want) {
		t.Fatalf("Tail = %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if idx(r) != want[i] {
			t.Errorf("Tail[%d] = record %d, want %d", i, idx(r), want[i])
		}
	}
	all, err := Tail(path, 1_000_000, Filter{})
	if err != nil || len(all) != 3000 {
		t.Errorf("Tail(all) = %d records, %v; want 3000", len(all), err)
	}
	if _, err := Tail(filepath.Join(t.TempDir(), "nope"), 5, Filter{}); err == nil {
		t.Errorf("Tail of a missing file succeeded")
	}
}

func TestFollow(t *testing.T) {
	line := len(mustLine(t, sample(0)))
	w, path := openTest(t, Options{MaxBytes: int64(line * 4), FlushInterval: time.Millisecond})
	w.Write(sample(0)) // before Follow starts: not delivered
	w.Flush()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Record, 100)
	done := make(chan error, 1)
	// Follow's first step (seeking to the end) done before anything else is written.
	fl, err := startFollowing(path, Filter{Container: "c1"}, func(r Record) error { got <- r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- fl.follow(ctx) }()
	for i := 1; i <= 12; i++ { // crosses three rotations
		r := sample(i)
		if i%4 == 0 {
			r.Container = "filtered-out"
		}
		w.Write(r)
		w.Flush()
		time.Sleep(30 * time.Millisecond)
	}
	var seen []int
	timeout := time.After(5 * time.Second)
	for len(seen) < 9 {
		select {
		case r := <-got:
			seen = append(seen, idx(r))
		case <-timeout:
			t.Fatalf("Follow delivered %v, want 9 records", seen)
		}
	}
	want := []int{1, 2, 3, 5, 6, 7, 9, 10, 11}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("Follow delivered %v, want %v", seen, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow after cancel = %v, want nil", err)
	}
}

func TestFollow_StopsOnCallbackErrorAndWaitsForFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	stop := errors.New("stop")
	done := make(chan error, 1)
	// Follow's first step done (it found no file) before the file exists.
	fl, err := startFollowing(path, Filter{}, func(Record) error { return stop })
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- fl.follow(context.Background()) }()
	w, err := Open(path, Options{FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(sample(1))
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Errorf("Follow = %v, want the callback's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not pick up a file created after it started")
	}
}

func TestWriter_NoGoroutineLeak(t *testing.T) {
	before := goleak.IgnoreCurrent()
	for range 20 {
		w, err := Open(filepath.Join(t.TempDir(), "a.jsonl"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(sample(1))
		w.Close()
	}
	testutil.NoLeaks(t, before)
}

// TestWriter_KeepsRecordsAcrossIOErrors: while the file cannot be written
// (its fd is broken and its directory is gone), records stay queued; once
// the directory is back, a flush writes every one of them.
func TestWriter_KeepsRecordsAcrossIOErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "audit.jsonl")
	w, err := Open(path, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(sample(0))
	w.Flush()
	os.RemoveAll(dir)
	w.mu.Lock()
	w.f.Close() // the next write fails; the reopen fails too (no directory)
	w.mu.Unlock()
	for i := 1; i <= 5; i++ {
		w.Write(sample(i))
	}
	if err := w.Flush(); err == nil {
		t.Fatal("Flush succeeded with the directory gone")
	}
	os.Mkdir(dir, 0o700)
	if err := w.Flush(); err != nil {
		t.Fatalf("Flush after the directory came back: %v", err)
	}
	got, _ := Tail(path, 10, Filter{})
	if len(got) != 5 || idx(got[0]) != 1 || idx(got[4]) != 5 {
		t.Fatalf("after recovery the file has %d records, want records 1..5", len(got))
	}
	if st := w.Stats(); st.Failed != 0 || st.Written != 6 {
		t.Errorf("Stats = %+v, want Written 6, Failed 0", st)
	}
}

// TestWriter_GivesUpOnlyPastMaxPending: a file that never accepts writes
// costs queued records only once the queue exceeds its bound, and they are
// counted.
func TestWriter_GivesUpOnlyPastMaxPending(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "audit.jsonl")
	w, err := Open(path, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	line := len(mustLine(t, sample(0)))
	w.mu.Lock()
	w.maxPending = 10 * line
	w.f.Close()
	w.mu.Unlock()
	os.RemoveAll(dir)
	for i := range 25 {
		w.Write(sample(i))
		w.Flush()
	}
	st := w.Stats()
	if st.Failed != 20 || st.Written != 25 {
		t.Fatalf("Stats = %+v, want 20 failed (two full queues) of 25 written", st)
	}
	os.Mkdir(dir, 0o700)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := Tail(path, 100, Filter{})
	if len(got) != 5 || idx(got[0]) != 20 {
		t.Fatalf("file has %d records, want the last 5 (20..24)", len(got))
	}
}
