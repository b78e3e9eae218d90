package session

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	_ "modernc.org/sqlite" // pure-Go driver "sqlite"
)

// store persists sessions in state_dir/db.sqlite.
type store struct {
	db *sql.DB
}

const schema = `
CREATE TABLE IF NOT EXISTS sessions (
	name       TEXT PRIMARY KEY,
	container  TEXT NOT NULL,
	image      TEXT NOT NULL,
	agent      TEXT NOT NULL,
	profile    TEXT NOT NULL,
	prompt     TEXT NOT NULL,
	print      INTEGER NOT NULL,
	state      TEXT NOT NULL,
	exit_code  INTEGER NOT NULL DEFAULT 0,
	created_at TEXT NOT NULL
);`

// addedColumns came after the first schema; openStore adds those an older
// database lacks.
var addedColumns = []string{"workspace", "repo", "branch", "user", "owner", "owner_uid", "container_id"}

// runsSchema records `clauderon run` containers: who asked, for which
// profile, and (once it showed up) which container.
const runsSchema = `
CREATE TABLE IF NOT EXISTS runs (
	id           TEXT PRIMARY KEY,
	owner        TEXT NOT NULL,
	owner_uid    TEXT NOT NULL,
	profile      TEXT NOT NULL,
	container_id TEXT NOT NULL DEFAULT '',
	created_at   TEXT NOT NULL
);`

func openStore(ctx context.Context, path string) (*store, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("opening session database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; sqlite serializes anyway
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("creating session schema in %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, runsSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("creating run schema in %s: %w", path, err)
	}
	if err := addColumns(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("upgrading session schema in %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func addColumns(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info('sessions')`)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		have[n] = true
	}
	rows.Close()
	for _, c := range addedColumns {
		if !have[c] {
			if _, err := db.ExecContext(ctx, `ALTER TABLE sessions ADD COLUMN `+c+` TEXT NOT NULL DEFAULT ''`); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) insert(ctx context.Context, se api.Session) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (name, container, image, agent, profile, prompt, print, state, exit_code, created_at, workspace, repo, branch, user, owner, owner_uid, container_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		se.Name, se.Container, se.Image, se.Agent, se.Profile, se.Prompt, se.Print, se.State, se.ExitCode, se.CreatedAt.UTC().Format(time.RFC3339Nano),
		se.Workspace, se.Repo, se.Branch, se.User, se.Owner, se.OwnerUID, se.ContainerID)
	if err != nil {
		return fmt.Errorf("recording session %q: %w", se.Name, err)
	}
	return nil
}

func (s *store) setState(ctx context.Context, name, state string, exitCode int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sessions SET state = ?, exit_code = ? WHERE name = ?`, state, exitCode, name)
	if err != nil {
		return fmt.Errorf("updating session %q: %w", name, err)
	}
	return nil
}

func (s *store) delete(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE name = ?`, name); err != nil {
		return fmt.Errorf("deleting session %q: %w", name, err)
	}
	return nil
}

func (s *store) get(ctx context.Context, name string) (api.Session, error) {
	rows, err := s.query(ctx, `WHERE name = ?`, name)
	if err != nil {
		return api.Session{}, err
	}
	if len(rows) == 0 {
		return api.Session{}, fmt.Errorf("session %q: %w", name, api.ErrNotFound)
	}
	return rows[0], nil
}

func (s *store) list(ctx context.Context) ([]api.Session, error) {
	return s.query(ctx, `ORDER BY created_at, name`)
}

func (s *store) query(ctx context.Context, where string, args ...any) ([]api.Session, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, container, image, agent, profile, prompt, print, state, exit_code, created_at, workspace, repo, branch, user, owner, owner_uid, container_id FROM sessions `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("reading sessions: %w", err)
	}
	defer rows.Close()
	out := []api.Session{}
	for rows.Next() {
		var se api.Session
		var created string
		if err := rows.Scan(&se.Name, &se.Container, &se.Image, &se.Agent, &se.Profile, &se.Prompt, &se.Print, &se.State, &se.ExitCode, &created,
			&se.Workspace, &se.Repo, &se.Branch, &se.User, &se.Owner, &se.OwnerUID, &se.ContainerID); err != nil {
			return nil, fmt.Errorf("reading session row: %w", err)
		}
		if se.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
			return nil, fmt.Errorf("session %q: bad created_at %q: %w", se.Name, created, err)
		}
		out = append(out, se)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading sessions: %w", err)
	}
	return out, nil
}

func (s *store) insertRun(ctx context.Context, id, ownerUID string, p Provenance) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO runs (id, owner, owner_uid, profile, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, p.Owner, ownerUID, p.Profile, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("recording a run: %w", err)
	}
	return nil
}

func (s *store) bindRun(ctx context.Context, id, containerID string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE runs SET container_id = ? WHERE id = ? AND container_id = ''`, containerID, id)
	return err
}

// runRow is one recorded run.
type runRow struct {
	id, containerID string
	prov            Provenance
}

func (s *store) listRuns(ctx context.Context) ([]runRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, owner, profile, container_id FROM runs`)
	if err != nil {
		return nil, fmt.Errorf("reading runs: %w", err)
	}
	defer rows.Close()
	var out []runRow
	for rows.Next() {
		var r runRow
		if err := rows.Scan(&r.id, &r.prov.Owner, &r.prov.Profile, &r.containerID); err != nil {
			return nil, fmt.Errorf("reading run row: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
