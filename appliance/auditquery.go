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
// owner, if set, limits the lines to that owner's containers.
func tailAudit(ctx context.Context, path string, q api.AuditQuery, owner string, w io.Writer) error {
	f := audit.Filter{Container: q.Container, Host: q.Host, Owner: owner}
	n := q.Lines
	if n <= 0 {
		n = maxAuditLines
	}
	recs, err := audit.Tail(path, n, f)
	if err != nil {
		return fmt.Errorf("reading audit log: %w", err)
	}
	enc := safeEncoder{w: w}
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

// safeEncoder writes one JSON line per record with every non-printable
// non-ASCII rune (C1, bidi, U+2028/2029) and DEL escaped, as the file has
// them: a client printing the lines raw cannot be steered.
type safeEncoder struct{ w io.Writer }

func (e safeEncoder) Encode(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = e.w.Write(audit.SafeJSON(append(b, '\n')))
	return err
}

func flush(w io.Writer) {
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}
