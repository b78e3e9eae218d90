package appliance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
)

func (d *daemon) auditPath() string { return filepath.Join(d.config().StateDir, "audit.jsonl") }

// auditMatches reports whether one audit line passes the query's filters.
func auditMatches(line []byte, q api.AuditQuery) bool {
	if q.Container == "" && q.Host == "" {
		return true
	}
	var r struct {
		Container string `json:"container"`
		Host      string `json:"host"`
		SNI       string `json:"sni"`
	}
	if json.Unmarshal(line, &r) != nil {
		return false
	}
	if q.Container != "" && r.Container != q.Container && !strings.HasPrefix(r.Container, q.Container) {
		return false
	}
	if q.Host != "" && !strings.EqualFold(r.Host, q.Host) && !strings.EqualFold(r.SNI, q.Host) {
		return false
	}
	return true
}

// tailAudit writes the matching lines of the audit log (the last q.Lines of
// them when set) and, with q.Follow, keeps streaming appended lines until ctx
// is done, reopening the file when it is rotated.
func tailAudit(ctx context.Context, path string, q api.AuditQuery, w io.Writer) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && q.Follow {
		f = nil
	} else if err != nil {
		return fmt.Errorf("opening audit log: %w", err)
	}
	var offset int64
	if f != nil {
		offset, err = writeMatching(f, q, w)
		f.Close()
		if err != nil {
			return err
		}
	}
	if !q.Follow {
		return nil
	}
	return followAudit(ctx, path, offset, q, w)
}

// writeMatching writes the matching complete lines of f; it returns the
// offset after the last complete line.
func writeMatching(f *os.File, q api.AuditQuery, w io.Writer) (int64, error) {
	var keep [][]byte
	var offset int64
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			offset += int64(len(line))
			if auditMatches(bytes.TrimSpace(line), q) {
				keep = append(keep, line)
				if q.Lines > 0 && len(keep) > q.Lines {
					keep = keep[1:]
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return offset, fmt.Errorf("reading audit log: %w", err)
		}
	}
	for _, l := range keep {
		if _, err := w.Write(l); err != nil {
			return offset, err
		}
	}
	flush(w)
	return offset, nil
}

// followAudit polls the file for appended lines.
func followAudit(ctx context.Context, path string, offset int64, q api.AuditQuery, w io.Writer) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		if fi.Size() < offset { // rotated
			offset = 0
		}
		if fi.Size() == offset {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if _, err := f.Seek(offset, io.SeekStart); err == nil {
			var n int64
			n, err = writeMatching(f, api.AuditQuery{Container: q.Container, Host: q.Host}, w)
			offset += n
		}
		f.Close()
		if err != nil {
			return err
		}
	}
}

func flush(w io.Writer) {
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}
