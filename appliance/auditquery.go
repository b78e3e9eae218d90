package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/audit"
)

func (d *daemon) auditPath() string { return filepath.Join(d.config().StateDir, "audit.jsonl") }

// maxAuditLines bounds a query for "all" lines.
const maxAuditLines = 1 << 20

// tailAudit writes the matching records (the last q.Lines, or all) as JSON
// lines and, with q.Follow, keeps streaming appended ones until ctx is done.
func tailAudit(ctx context.Context, path string, q api.AuditQuery, w io.Writer) error {
	f := audit.Filter{Container: q.Container, Host: q.Host}
	n := q.Lines
	if n <= 0 {
		n = maxAuditLines
	}
	recs, err := audit.Tail(path, n, f)
	if err != nil {
		return fmt.Errorf("reading audit log: %w", err)
	}
	enc := json.NewEncoder(w)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	flush(w)
	if !q.Follow {
		return nil
	}
	return audit.Follow(ctx, path, f, func(r audit.Record) error {
		if err := enc.Encode(r); err != nil {
			return err
		}
		flush(w)
		return nil
	})
}

func flush(w io.Writer) {
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}
