package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNotChained is returned by Writer.Verify when the writer has no Key.
var ErrNotChained = errors.New("the audit log is not chained (no key)")

// maxVerifyLine bounds one line while verifying; the writer's own lines
// are far shorter (every field is bounded).
const maxVerifyLine = 1 << 20

// VerifyResult is what Verify found. OK is true when every chained line
// verified, in order, across the files, and (for Writer.Verify) the last
// line the writer wrote is there.
type VerifyResult struct {
	OK        bool
	Files     []string // base names, oldest first
	Lines     int      // chained lines verified
	Unchained int      // lines before the first chain (written before chaining was on)
	FirstBad  *BadLine // the first problem; nil when OK
}

// BadLine locates the first problem: the file's base name, the 1-based line
// (0 for a missing file) and what is wrong.
type BadLine struct {
	File   string
	Line   int
	Reason string
}

// Verify checks the chain of the writer's files (path.N … path.1, path),
// and that the last line it wrote is among them: a tail cut off the
// current file is found too. It holds the writer's lock only to note that
// last MAC and open the files; lines written meanwhile are verified as
// well if they land in the files opened.
func (w *Writer) Verify() (VerifyResult, error) {
	w.mu.Lock()
	if w.chain == nil {
		w.mu.Unlock()
		return VerifyResult{}, ErrNotChained
	}
	last := bytes.Clone(w.chain.prev)
	files, err := openGenerations(w.path)
	w.mu.Unlock()
	if err != nil {
		return VerifyResult{}, err
	}
	defer closeAll(files)
	return verifyChain(files, w.opts.Key, last), nil
}

// VerifyFiles checks the chain of path.N … path.1, path with key, without
// a writer (offline). It cannot tell a tail cut at a line boundary.
func VerifyFiles(path string, key *Key) (VerifyResult, error) {
	files, err := openGenerations(path)
	if err != nil {
		return VerifyResult{}, err
	}
	defer closeAll(files)
	return verifyChain(files, key, nil), nil
}

// generation is one file of the log, oldest first; f is nil for a
// rotated file that is missing while an older one exists.
type generation struct {
	name string
	f    *os.File
}

// openGenerations opens path.N … path.1 and path, oldest first.
func openGenerations(path string) ([]generation, error) {
	var gens []generation
	highest := 0
	for i := 1; i <= maxTailBackups; i++ {
		f, err := openNoFollow(backupName(path, i))
		if errors.Is(err, fs.ErrNotExist) {
			gens = append(gens, generation{name: filepath.Base(backupName(path, i))})
			continue
		}
		if err != nil {
			closeAll(gens)
			return nil, fmt.Errorf("verifying audit log: %w", err)
		}
		gens = append(gens, generation{name: filepath.Base(backupName(path, i)), f: f})
		highest = i
	}
	closeAll(gens[highest:])
	gens = gens[:highest]
	for i, j := 0, len(gens)-1; i < j; i, j = i+1, j-1 {
		gens[i], gens[j] = gens[j], gens[i]
	}
	f, err := openNoFollow(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		closeAll(gens)
		return nil, fmt.Errorf("verifying audit log: %w", err)
	}
	return append(gens, generation{name: filepath.Base(path), f: f}), nil
}

func closeAll(gens []generation) {
	for _, g := range gens {
		if g.f != nil {
			g.f.Close()
		}
	}
}

// verifier walks the lines of all generations in order.
type verifier struct {
	c        *chainer
	res      VerifyResult
	started  bool   // a chained line was seen
	last     []byte // the writer's last MAC (nil: unknown)
	seenLast bool
	at       string // "file:line" of the last verified line
}

func verifyChain(gens []generation, key *Key, last []byte) VerifyResult {
	v := &verifier{c: newChainer(key), last: last}
	n := 0 // lines in the newest file
	for _, g := range gens {
		v.res.Files = append(v.res.Files, g.name)
		if g.f == nil {
			if g.name != gens[len(gens)-1].name {
				return v.fail(g.name, 0, "the file is missing: it was removed or renamed while older ones were kept")
			}
			continue
		}
		var bad *BadLine
		if n, bad = v.file(g); bad != nil {
			v.res.FirstBad = bad
			return v.res
		}
	}
	if v.last != nil && !v.seenLast {
		return v.fail(gens[len(gens)-1].name, n+1, "the log ends before the last line the daemon wrote: lines were cut from its end (or are still held in memory after write errors)")
	}
	v.res.OK = true
	return v.res
}

func (v *verifier) fail(file string, line int, reason string) VerifyResult {
	v.res.FirstBad = &BadLine{File: file, Line: line, Reason: reason}
	return v.res
}

// file verifies one generation; it returns how many lines it had.
func (v *verifier) file(g generation) (int, *BadLine) {
	sc := bufio.NewScanner(g.f)
	sc.Buffer(make([]byte, 64<<10), maxVerifyLine)
	n := 0
	for sc.Scan() {
		n++
		if reason := v.line(sc.Bytes()); reason != "" {
			return n, &BadLine{File: g.name, Line: n, Reason: reason}
		}
		v.at = fmt.Sprintf("%s:%d", g.name, n)
	}
	if err := sc.Err(); err != nil {
		return n, &BadLine{File: g.name, Line: n + 1, Reason: "unreadable: " + err.Error()}
	}
	return n, nil
}

// chainStartMarker can only occur outside a JSON string (inside one every
// quote is escaped), so it is a cheap test for a chain-start line.
var chainStartMarker = []byte(`"decision":"` + DecisionChainStart + `"`)

// line verifies one line and returns why it is bad ("" when it is fine).
func (v *verifier) line(line []byte) string {
	body, mac, ok := splitChain(line)
	if !ok {
		if !v.started {
			v.res.Unchained++
			return ""
		}
		return "the line carries no chain MAC: it was inserted or altered"
	}
	var start struct {
		Decision  string `json:"decision"`
		Rule      string `json:"rule"`
		PrevChain string `json:"prev_chain"`
	}
	isStart := bytes.Contains(body, chainStartMarker) && json.Unmarshal(body, &start) == nil && start.Decision == DecisionChainStart
	switch {
	case !v.started && !isStart:
		return "the oldest chained line is not a chain start: the lines before it are missing"
	case !v.started && v.res.Unchained > 0 && start.Rule != ChainStartNew:
		return "unchained lines precede a chain that continues older lines: chained lines before it were replaced"
	case !v.started:
		prev, err := hex.DecodeString(start.PrevChain)
		if err != nil {
			return "the chain start carries a malformed prev_chain"
		}
		v.c.prev = prev
	case isStart && start.PrevChain != hex.EncodeToString(v.c.prev):
		return fmt.Sprintf("a chain starts here (%s) that does not continue from the line before it (%s): the lines in between are missing (removed, or the file was moved)", start.Rule, v.at)
	}
	v.started = true
	if !hmac.Equal(v.c.macOf(v.c.prev, body), mac) {
		return "the line does not match its chain MAC: it was altered, or lines before it were removed, inserted or reordered"
	}
	v.c.prev = append(v.c.prev[:0], mac...)
	v.res.Lines++
	if v.last != nil && bytes.Equal(mac, v.last) {
		v.seenLast = true
	}
	return ""
}
