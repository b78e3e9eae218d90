package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKey(t *testing.T, b byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{b}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// chainedLog writes 45 records into a chained log rotating every ~10 lines
// with 3 backups, closes it and returns the path, key and writer.
func chainedLog(t *testing.T) (string, *Key, *Writer) {
	t.Helper()
	key := testKey(t, 1)
	line := len(mustLine(t, sample(0))) + chainSuffix
	w, path := openTest(t, Options{Key: key, MaxBytes: int64(line*10 + 1), MaxBackups: 3, RatePerSecond: -1})
	for i := range 45 {
		w.Write(sample(i))
	}
	return path, key, w
}

func mustVerify(t *testing.T, w *Writer) VerifyResult {
	t.Helper()
	res, err := w.Verify()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAudit_ChainVerifiesAcrossRotation(t *testing.T) {
	path, key, w := chainedLog(t)
	res := mustVerify(t, w)
	if !res.OK || res.FirstBad != nil {
		t.Fatalf("Verify = %+v, want OK", res)
	}
	if want := []string{"audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"}; fmt.Sprint(res.Files) != fmt.Sprint(want) {
		t.Errorf("Files = %v, want %v", res.Files, want)
	}
	w.Close()
	off, err := VerifyFiles(path, key)
	if err != nil || !off.OK || off.Lines != res.Lines {
		t.Fatalf("VerifyFiles = %+v, %v; want OK with %d lines", off, err, res.Lines)
	}
	// The first line of each file is a chain start naming what it continues.
	for _, name := range []string{path + ".2", path + ".1", path} {
		first := readLines(t, name)[0]
		if first["decision"] != DecisionChainStart || first["rule"] != ChainStartRotation || first["prev_file"] != "audit.jsonl.1" || first["prev_chain"] == "" {
			t.Errorf("%s starts with %v, want a rotation chain start", filepath.Base(name), first)
		}
	}
	// Another key does not verify it: the MACs are keyed.
	if res, _ := VerifyFiles(path, testKey(t, 2)); res.OK {
		t.Error("the log verifies under another key")
	}
}

func TestAudit_ChainResumesAcrossRestart(t *testing.T) {
	key := testKey(t, 1)
	w, path := openTest(t, Options{Key: key})
	w.Write(sample(1))
	w.Close()
	w2, err := Open(path, Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	w2.Write(sample(2))
	if res := mustVerify(t, w2); !res.OK || res.Lines != 4 {
		t.Fatalf("Verify after restart = %+v, want OK with 4 lines (2 chain starts, 2 records)", res)
	}
	lines := readLines(t, path)
	if lines[2]["decision"] != DecisionChainStart || lines[2]["rule"] != ChainStartOpen || lines[2]["prev_chain"] != lines[1]["chain"] {
		t.Errorf("restart line = %v, want a daemon-start continuing from %v", lines[2], lines[1]["chain"])
	}
}

// TestAudit_UpgradeFromUnchainedLog: lines written before chaining stay
// readable and are counted, not failed; the chain that follows is new.
func TestAudit_UpgradeFromUnchainedLog(t *testing.T) {
	w, path := openTest(t, Options{})
	w.Write(sample(1))
	w.Write(sample(2))
	w.Close()
	w2, err := Open(path, Options{Key: testKey(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	w2.Write(sample(3))
	res := mustVerify(t, w2)
	if !res.OK || res.Unchained != 2 || res.Lines != 2 {
		t.Fatalf("Verify = %+v, want OK, 2 unchained, 2 chained", res)
	}
	if got := readLines(t, path)[2]; got["rule"] != ChainStartNew || !strings.Contains(got["error"].(string), "no chain MAC") {
		t.Errorf("upgrade line = %v", got)
	}
}

// rewrite edits the lines of a file.
func rewrite(t *testing.T, name string, edit func(lines [][]byte) [][]byte) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if err := os.WriteFile(name, bytes.Join(edit(lines), nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAttack_AuditTamperingIsDetected performs each way of rewriting the
// evidence and fails if Verify still says the log is intact.
func TestAttack_AuditTamperingIsDetected(t *testing.T) {
	tests := []struct {
		name     string
		attack   func(t *testing.T, path string)
		wantFile string
		wantLine int  // 1-based; 0 for a missing file
		fromEnd  bool // wantLine is relative to the current file's line count before the attack
	}{
		{"modify_a_field", func(t *testing.T, path string) {
			rewrite(t, path+".1", func(l [][]byte) [][]byte {
				l[4] = bytes.Replace(l[4], []byte(`"status":200`), []byte(`"status":404`), 1)
				return l
			})
		}, "audit.jsonl.1", 5, false},
		{"delete_a_line_from_the_middle", func(t *testing.T, path string) {
			rewrite(t, path+".2", func(l [][]byte) [][]byte { return append(l[:3], l[4:]...) })
		}, "audit.jsonl.2", 4, false},
		{"insert_a_forged_line", func(t *testing.T, path string) {
			rewrite(t, path+".1", func(l [][]byte) [][]byte {
				forged := bytes.Replace(l[2], []byte(`"c1"`), []byte(`"innocent"`), 1)
				return append(l[:3], append([][]byte{forged}, l[3:]...)...)
			})
		}, "audit.jsonl.1", 4, false},
		{"replay_a_line", func(t *testing.T, path string) {
			rewrite(t, path, func(l [][]byte) [][]byte { return append(l, l[1]) })
		}, "audit.jsonl", 1, true},
		{"swap_two_lines", func(t *testing.T, path string) {
			rewrite(t, path+".1", func(l [][]byte) [][]byte { l[3], l[4] = l[4], l[3]; return l })
		}, "audit.jsonl.1", 4, false},
		{"strip_the_chain_member", func(t *testing.T, path string) {
			rewrite(t, path+".1", func(l [][]byte) [][]byte {
				i := bytes.Index(l[5], []byte(`,"chain":`))
				l[5] = append(append([]byte{}, l[5][:i]...), "}\n"...)
				return l
			})
		}, "audit.jsonl.1", 6, false},
		{"swap_rotated_files", func(t *testing.T, path string) {
			os.Rename(path+".1", path+".tmp")
			os.Rename(path+".2", path+".1")
			os.Rename(path+".tmp", path+".2")
		}, "audit.jsonl.2", 1, false},
		{"remove_a_middle_backup", func(t *testing.T, path string) {
			os.Remove(path + ".2")
		}, "audit.jsonl.2", 0, false},
		{"remove_a_backup_and_renumber", func(t *testing.T, path string) {
			os.Remove(path + ".2")
			os.Rename(path+".3", path+".2")
		}, "audit.jsonl.1", 1, false},
		{"cut_the_tail", func(t *testing.T, path string) {
			rewrite(t, path, func(l [][]byte) [][]byte { return l[:len(l)-2] })
		}, "audit.jsonl", -1, true},
		{"empty_the_current_file", func(t *testing.T, path string) {
			os.WriteFile(path, nil, 0o600)
		}, "audit.jsonl", 1, false},
		{"replace_old_lines_by_unchained_ones", func(t *testing.T, path string) {
			os.WriteFile(path+".3", []byte(`{"decision":"intercept"}`+"\n"), 0o600)
		}, "audit.jsonl.2", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _, w := chainedLog(t)
			if res := mustVerify(t, w); !res.OK {
				t.Fatalf("intact log: %+v", res)
			}
			want := tt.wantLine
			if tt.fromEnd {
				want += len(readLines(t, path))
			}
			tt.attack(t, path)
			res := mustVerify(t, w)
			if res.OK || res.FirstBad == nil {
				t.Fatalf("tampered log verifies: %+v", res)
			}
			if res.FirstBad.File != tt.wantFile || res.FirstBad.Line != want {
				t.Errorf("FirstBad = %+v, want %s line %d", *res.FirstBad, tt.wantFile, want)
			}
		})
	}
}

// TestAttack_RemovedFileStartsAVisibleNewChain: the writer recreates a
// removed file, and Verify reports the break there.
func TestAttack_RemovedFileStartsAVisibleNewChain(t *testing.T) {
	key := testKey(t, 1)
	w, path := openTest(t, Options{Key: key, FlushInterval: 5 * time.Millisecond, MaxBackups: 2})
	w.Write(sample(1))
	w.mu.Lock()
	w.rotateLocked()
	w.mu.Unlock()
	w.Write(sample(2))
	os.Remove(path)
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(path); err != nil; _, err = os.Stat(path) {
		if time.Now().After(deadline) {
			t.Fatal("writer did not recreate the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.Write(sample(3))
	res := mustVerify(t, w)
	if res.OK || res.FirstBad == nil || res.FirstBad.File != "audit.jsonl" || res.FirstBad.Line != 1 ||
		!strings.Contains(res.FirstBad.Reason, ChainStartMoved) {
		t.Fatalf("Verify = %+v, want the new chain at audit.jsonl line 1 reported", res)
	}
}

func TestAudit_KeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.key")
	k, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	if b, _ := os.ReadFile(path); len(b) != KeySize {
		t.Errorf("key file has %d bytes", len(b))
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k.b, k2.b) {
		t.Fatalf("reloaded key differs (%v)", err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k)
	j, _ := json.Marshal(struct{ K *Key }{k})
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), logged.String(), string(j)} {
		if !strings.Contains(s, "REDACTED") || strings.Contains(s, string(k.b)) || strings.Contains(s, fmt.Sprintf("%x", k.b)) ||
			strings.Contains(s, fmt.Sprint(k.b)) {
			t.Errorf("key printed as %q", s)
		}
	}

	os.Chmod(path, 0o640)
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "forge") {
		t.Errorf("group-readable key accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Error("short key accepted")
	}
	link := filepath.Join(dir, "link.key")
	os.Symlink(path, link)
	if _, err := LoadOrCreateKey(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlinked key accepted: %v", err)
	}
}
