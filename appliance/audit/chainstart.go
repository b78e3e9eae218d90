package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
)

// endPartialLineLocked ends a file whose last line was cut short (a full
// disk, a crash mid-write) with a newline, so the next line is whole.
func (w *Writer) endPartialLineLocked() {
	if w.size == 0 {
		return
	}
	f, err := openNoFollow(w.path)
	if err != nil {
		return
	}
	defer f.Close()
	last := make([]byte, 1)
	if n, _ := f.ReadAt(last, w.size-1); n == 1 && last[0] != '\n' {
		w.appendLocked([]byte{'\n'})
	}
}

// resumeChainLocked continues the chain from the last line on disk (of
// path, else of path.1) with a chain-start line, or starts a new chain
// when there is none or it carries no MAC.
func (w *Writer) resumeChainLocked() {
	for _, name := range []string{w.path, backupName(w.path, 1)} {
		line, err := lastLine(name)
		if err != nil || line == nil {
			continue
		}
		if _, mac, ok := splitChain(line); ok {
			w.chain.prev = mac
			w.chainStartLocked(ChainStartOpen, filepath.Base(name), "")
			return
		}
		w.chain.prev = nil
		w.chainStartLocked(ChainStartNew, filepath.Base(name), "the last line of "+filepath.Base(name)+
			" carries no chain MAC (written before chaining was on, or cut short); a new chain starts here")
		return
	}
	w.chain.prev = nil
	w.chainStartLocked(ChainStartNew, "", "")
}

// lastLine returns the last non-empty line of the file (nil if none).
func lastLine(name string) ([]byte, error) {
	var last []byte
	err := scanBackward(name, func(line []byte) bool {
		last = bytes.Clone(line)
		return false
	})
	return last, err
}

// chainStartLocked writes a DecisionChainStart line continuing from the
// chain's current MAC (none for a new chain). It is never rate-limited and
// not counted in Stats.Written.
func (w *Writer) chainStartLocked(reason, prevFile, msg string) {
	if w.chain == nil {
		return
	}
	r := Record{TS: w.now().UTC(), Kind: KindLog, Decision: DecisionChainStart, Rule: reason, PrevFile: prevFile,
		PrevChain: hex.EncodeToString(w.chain.prev), Error: msg}
	line, err := json.Marshal(r)
	if err != nil {
		return
	}
	w.sealLocked(append(line, '\n'))
}
