package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"time"
)

const (
	tailChunk        = 64 << 10
	maxTailBackups   = 100
	followPoll       = 250 * time.Millisecond
	maxFollowPending = 4 << 20 // a "line" longer than this is not ours; it is skipped
)

// Tail returns the last n records matching f, oldest first. It reads path
// backwards and continues into the rotated files (path.1, path.2, …) while
// it has found fewer than n. Lines that are not valid records are skipped.
func Tail(path string, n int, f Filter) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	var out []Record // newest first
	for i := 0; i <= maxTailBackups && len(out) < n; i++ {
		name := path
		if i > 0 {
			name = backupName(path, i)
		}
		err := scanBackward(name, func(line []byte) bool {
			var r Record
			if json.Unmarshal(line, &r) == nil && f.Match(r) {
				out = append(out, r)
			}
			return len(out) < n
		})
		if errors.Is(err, fs.ErrNotExist) && i > 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading audit log: %w", err)
		}
	}
	slices.Reverse(out)
	return out, nil
}

// scanBackward calls fn with each non-empty line of the file, last line
// first, until fn returns false.
func scanBackward(name string, fn func(line []byte) bool) error {
	file, err := openNoFollow(name)
	if err != nil {
		return err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return err
	}
	var carry []byte // the start of the file's text after the block just read, up to its first newline
	for pos := fi.Size(); pos > 0; {
		sz := min(int64(tailChunk), pos)
		pos -= sz
		block := make([]byte, sz, sz+int64(len(carry)))
		if _, err := file.ReadAt(block, pos); err != nil && err != io.EOF {
			return err
		}
		data := append(block, carry...)
		for {
			i := bytes.LastIndexByte(data, '\n')
			if i < 0 {
				break
			}
			if line := data[i+1:]; len(line) > 0 && !fn(line) {
				return nil
			}
			data = data[:i]
		}
		carry = data
	}
	if len(carry) > 0 {
		fn(carry)
	}
	return nil
}

// Follow calls fn for every record matching f that is appended to path
// from now on, until ctx is done (then it returns nil) or fn returns an
// error (returned as is). It polls every 250ms, waits for the file if it
// does not exist yet, and follows rotation: the old file is read to its
// end before the new one is opened from its start.
func Follow(ctx context.Context, path string, f Filter, fn func(Record) error) error {
	fl, err := startFollowing(path, f, fn)
	if err != nil {
		return err
	}
	return fl.follow(ctx)
}

// startFollowing opens path at its current end (if it exists): records
// appended after it returns are delivered by follow.
func startFollowing(path string, f Filter, fn func(Record) error) (*follower, error) {
	fl := &follower{path: path, filter: f, fn: fn}
	if err := fl.open(true); err != nil {
		return nil, err
	}
	return fl, nil
}

// follow polls until ctx is done or fn fails, and closes the file.
func (fl *follower) follow(ctx context.Context) error {
	defer fl.close()
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for {
		if err := fl.poll(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type follower struct {
	path    string
	filter  Filter
	fn      func(Record) error
	file    *os.File
	info    os.FileInfo
	pending []byte // a partial last line
	skip    bool   // discarding an over-long line up to its newline
}

// open opens path; atEnd starts at its current end (the first open), else
// at its start (a file that appeared or replaced a rotated one).
func (fl *follower) open(atEnd bool) error {
	file, err := openNoFollow(fl.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // poll retries
	}
	if err != nil {
		return fmt.Errorf("following audit log: %w", err)
	}
	fi, err := file.Stat()
	if err == nil && atEnd {
		_, err = file.Seek(0, io.SeekEnd)
	}
	if err != nil {
		file.Close()
		return fmt.Errorf("following audit log: %w", err)
	}
	fl.file, fl.info, fl.pending, fl.skip = file, fi, nil, false
	return nil
}

func (fl *follower) close() {
	if fl.file != nil {
		fl.file.Close()
	}
}

// poll reads what was appended; if path now names another file (rotated)
// or the file shrank (truncated), it switches after draining.
func (fl *follower) poll() error {
	if fl.file == nil {
		return fl.open(false)
	}
	if err := fl.drain(); err != nil {
		return err
	}
	cur, err := os.Stat(fl.path)
	if err != nil {
		return nil // rotation in progress; the next poll sees the new file
	}
	if !os.SameFile(cur, fl.info) {
		if err := fl.drain(); err != nil { // lines appended just before the rename
			return err
		}
		fl.file.Close()
		fl.file = nil
		if err := fl.catchUp(); err != nil {
			return err
		}
		if err := fl.open(false); err != nil {
			return err
		}
		return fl.drain()
	}
	if off, err := fl.file.Seek(0, io.SeekCurrent); err == nil && cur.Size() < off {
		if _, err := fl.file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("following audit log: %w", err)
		}
		fl.pending, fl.skip = nil, false
	}
	return nil
}

// catchUp reads the generations rotated in full between two polls: if
// the file just finished is now path.k, then path.k-1 … path.1 (oldest
// first) were written after it.
func (fl *follower) catchUp() error {
	k := 0
	for i := 1; i <= maxTailBackups; i++ {
		fi, err := os.Stat(backupName(fl.path, i))
		if err != nil {
			break
		}
		if os.SameFile(fi, fl.info) {
			k = i
			break
		}
	}
	for i := k - 1; i >= 1; i-- {
		file, err := openNoFollow(backupName(fl.path, i))
		if err != nil {
			continue // rotated away meanwhile
		}
		fl.file, fl.pending, fl.skip = file, nil, false
		err = fl.drain()
		file.Close()
		fl.file = nil
		if err != nil {
			return err
		}
	}
	return nil
}

// drain reads the open file to EOF and hands complete lines to fn.
func (fl *follower) drain() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := fl.file.Read(buf)
		if n > 0 {
			if ferr := fl.feed(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("following audit log: %w", err)
		}
	}
}

func (fl *follower) feed(b []byte) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if fl.skip || len(fl.pending)+len(b) > maxFollowPending {
				fl.pending, fl.skip = nil, true
			} else {
				fl.pending = append(fl.pending, b...)
			}
			return nil
		}
		line := append(fl.pending, b[:i]...)
		skip := fl.skip
		fl.pending, fl.skip, b = fl.pending[:0], false, b[i+1:]
		if skip || len(line) == 0 {
			continue
		}
		var r Record
		if json.Unmarshal(line, &r) != nil || !fl.filter.Match(r) {
			continue
		}
		if err := fl.fn(r); err != nil {
			return err
		}
	}
	return nil
}

// openNoFollow opens an audit file for reading without following a symlink
// in its last component: the API must not serve whatever a planted link
// points at.
func openNoFollow(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}
