package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options.
const (
	DefaultMaxBytes      = 100 << 20
	DefaultMaxBackups    = 5
	DefaultFlushInterval = 200 * time.Millisecond
	defaultMaxPending    = 16 << 20 // pending bytes kept across I/O errors before lines are given up
)

// Options configures a Writer. The zero value is usable.
type Options struct {
	// MaxBytes rotates the file before a line would take it past this
	// size; 0 means DefaultMaxBytes, negative never rotates.
	MaxBytes int64
	// MaxBackups is how many rotated files (path.1 newest … path.N) are
	// kept; 0 means DefaultMaxBackups, negative keeps none.
	MaxBackups int
	// FlushInterval is how often the writer retries records a failed
	// write kept in memory, and checks whether the file was moved away;
	// 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// Scrub, if set, is applied to every string field before writing; the
	// appliance passes the credential store's redactor.
	Scrub func(string) string
	// KeepQuery keeps query strings in Record.Path (dropped by default:
	// queries can carry tokens).
	KeepQuery bool
	// Logger receives write errors and rotations; nil discards.
	Logger *slog.Logger
	// Key, if set, chains the lines: each carries
	// chain = hex HMAC-SHA256(Key, previous line's MAC || the line without
	// its chain member), across rotated files, so Verify finds a line
	// altered, removed, inserted or reordered. The appliance always sets
	// it (LoadOrCreateKey of state_dir/audit.key).
	Key *Key
	// RatePerSecond and Burst are each source's line budget (a source is
	// a container ID, else a source IP without port): lines past it are
	// not written, and one DecisionAuditDropped line per source and second
	// says how many were not. 0 means DefaultRatePerSecond and
	// DefaultBurst; a negative rate means no limit. Lines without a source
	// and the writer's own lines are never limited.
	RatePerSecond float64
	Burst         int

	now func() time.Time // the clock; time.Now outside tests
}

// Stats counts what a Writer did.
type Stats struct {
	Written    uint64 // records accepted by Write while open (queued for the file)
	AfterClose uint64 // records handed to Write after Close (not written)
	Failed     uint64 // of Written, records given up after the file refused writes past the queue bound
	Rotations  uint64 // completed rotations
	// RateLimited counts records not written because their source was
	// over its budget (each is in some DecisionAuditDropped line's count).
	RateLimited uint64
}

// Writer appends Records to an audit file. Safe for concurrent use.
type Writer struct {
	path   string
	opts   Options
	logger *slog.Logger

	mu     sync.Mutex // guards everything below, and the file
	f      *os.File
	buf    []byte // complete lines not yet written to f
	size   int64  // bytes in f plus buf
	closed bool

	maxPending int // defaultMaxPending; smaller in tests

	chain   *chainer // nil: lines are not chained
	sealed  []byte   // scratch for the chained line
	lim     *limiter // nil: no budget
	now     func() time.Time
	started bool // the chain-start line of Open was written

	written, afterClose, failed, rotations, rateLimited atomic.Uint64
	lastErrLog                                          atomic.Int64 // unix nanos of the last logged I/O error

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating 0600 if needed) the audit file at path for
// appending. The parent directory must exist. An existing file with a
// looser mode is tightened to 0600.
func Open(path string, opts Options) (*Writer, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxBackups == 0 {
		opts.MaxBackups = DefaultMaxBackups
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.RatePerSecond == 0 {
		opts.RatePerSecond = DefaultRatePerSecond
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{path: path, opts: opts, logger: logger.With("component", "audit"),
		stop: make(chan struct{}), done: make(chan struct{}), maxPending: defaultMaxPending,
		lim: newLimiter(opts.RatePerSecond, opts.Burst), now: opts.now}
	if w.now == nil {
		w.now = time.Now
	}
	if opts.Key != nil {
		w.chain = newChainer(opts.Key)
	}
	if err := w.openLocked(); err != nil {
		return nil, err
	}
	w.endPartialLineLocked()
	if w.chain != nil {
		w.resumeChainLocked()
	}
	go w.flushLoop()
	return w, nil
}

// Path is the file the writer appends to.
func (w *Writer) Path() string { return w.path }

var encoders = sync.Pool{New: func() any {
	b := new(bytes.Buffer)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	return &encoder{buf: b, enc: enc}
}}

type encoder struct {
	buf *bytes.Buffer
	enc *json.Encoder
}

// Write appends r as one line. A zero TS is set to now. Unless r's source
// is over its budget (Options.RatePerSecond; then r is counted in
// Stats.RateLimited and in the source's next DecisionAuditDropped line)
// it never drops r while the writer is open; after Close it returns at
// once and counts r in Stats.AfterClose.
func (w *Writer) Write(r Record) {
	now := w.now()
	if w.lim != nil && !w.lim.allow(&r, now) {
		w.rateLimited.Add(1)
		return
	}
	if w.write(r, now) {
		w.written.Add(1)
	}
}

// write encodes and appends r, unlimited; false after Close.
func (w *Writer) write(r Record, now time.Time) bool {
	if r.TS.IsZero() {
		r.TS = now
	}
	r = r.scrubbed(w.opts.Scrub, w.opts.KeepQuery)
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(r); err != nil { // cannot happen for Record's field types
		w.logger.Error("encoding audit record", "err", err)
		w.failed.Add(1)
		return true
	}
	line := SafeJSON(e.buf.Bytes()) // ends in '\n'; json escapes every newline inside strings

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.afterClose.Add(1)
		return false
	}
	n := int64(len(line))
	if w.chain != nil {
		n += int64(chainSuffix - 1)
	}
	if w.opts.MaxBytes > 0 && w.size > 0 && w.size+n > w.opts.MaxBytes {
		if err := w.rotateLocked(); err != nil {
			w.logIOError("rotating audit log; appending to the current file", err)
		}
	}
	w.sealLocked(line)
	return true
}

// sealLocked appends line, chained when the writer has a key.
func (w *Writer) sealLocked(line []byte) {
	if w.chain == nil {
		w.appendLocked(line)
		return
	}
	w.sealed = w.chain.seal(w.sealed[:0], line)
	w.appendLocked(w.sealed)
}

// appendLocked queues line and writes the queue at once, so that a record
// is in the kernel (and survives the daemon being killed) when Write
// returns. A write error keeps the queue (the flusher reopens the file and
// retries); only past maxPending are queued lines given up, counted in
// Stats.Failed.
func (w *Writer) appendLocked(line []byte) {
	if len(w.buf)+len(line) > w.maxPending {
		lost := bytes.Count(w.buf, []byte{'\n'})
		w.failed.Add(uint64(lost))
		w.logIOError("audit records lost: the file has not accepted writes", fmt.Errorf("%d records pending", lost))
		w.size -= int64(len(w.buf))
		w.buf = w.buf[:0]
	}
	w.buf = append(w.buf, line...)
	w.size += int64(len(line))
	if err := w.flushLocked(); err != nil {
		w.logIOError("writing audit log; keeping records in memory and retrying", err)
	}
}

// logIOError logs at most one I/O error per 10 seconds.
func (w *Writer) logIOError(msg string, err error) {
	now := time.Now().UnixNano()
	last := w.lastErrLog.Load()
	if now-last < int64(10*time.Second) || !w.lastErrLog.CompareAndSwap(last, now) {
		return
	}
	w.logger.Error(msg, "path", w.path, "err", err)
}

// Flush writes buffered records to the file (without fsync).
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	return w.flushLocked()
}

// flushLocked writes the queue to the file. On an error it reopens the
// file once (it may have been removed or replaced) and retries; whatever
// is still unwritten stays queued.
func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.writeQueue()
	if err == nil {
		return nil
	}
	w.f.Close()
	if rerr := w.openLocked(); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err := w.writeQueue(); err != nil {
		return fmt.Errorf("writing audit log: %w", err)
	}
	return nil
}

func (w *Writer) writeQueue() error {
	n, err := w.f.Write(w.buf)
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
	return err
}

func (w *Writer) syncLocked() error {
	if err := w.flushLocked(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("syncing audit log: %w", err)
	}
	return nil
}

// flushLoop flushes buffered records every FlushInterval until Close.
func (w *Writer) flushLoop() {
	defer close(w.done)
	t := time.NewTicker(w.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.writeDropSummaries(false)
			w.mu.Lock()
			if !w.closed {
				if err := w.flushLocked(); err != nil {
					w.logIOError("flushing audit log", err)
				}
				w.reopenIfMovedLocked()
			}
			w.mu.Unlock()
		}
	}
}

// Close flushes, fsyncs and closes the file, and stops the flusher. It is
// idempotent; later calls return the first result. Writes after Close are
// counted, not written.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.writeDropSummaries(true)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.closed = true
		err := w.syncLocked()
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing audit log: %w", cerr)
		}
		w.closeErr = err
	})
	return w.closeErr
}

// Stats returns the writer's counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), AfterClose: w.afterClose.Load(), Failed: w.failed.Load(),
		Rotations: w.rotations.Load(), RateLimited: w.rateLimited.Load()}
}

// writeDropSummaries writes the DecisionAuditDropped lines that are due
// (all pending ones when all).
func (w *Writer) writeDropSummaries(all bool) {
	if w.lim == nil {
		return
	}
	now := w.now()
	for _, r := range w.lim.summaries(now, all) {
		w.write(r, now)
	}
}
