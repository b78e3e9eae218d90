package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths of the API (version 1).
const (
	PathStatus   = "/v1/status"
	PathSessions = "/v1/sessions"
	PathRunArgs  = "/v1/run-args"
	PathDoctor   = "/v1/doctor"
	PathCA       = "/v1/ca"
	PathAudit    = "/v1/audit"
	PathReload   = "/v1/reload"
)

// PathAuditVerify checks the audit chain (GET; AuditVerifier).
const PathAuditVerify = "/v1/audit/verify"

// maxBody bounds request bodies.
const maxBody = 1 << 20

type handler struct {
	b   Backend
	log *slog.Logger
}

// NewHandler serves b as JSON over HTTP. Errors become {"error": "..."} with a
// status from the sentinel the Backend wrapped (500 otherwise). Streaming
// endpoints (session logs, audit) flush every write; an error after the
// stream began is sent in the X-Clauderon-Error trailer.
func NewHandler(b Backend, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{b: b, log: logger.With("component", "api")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, h.status)
	mux.HandleFunc("POST "+PathSessions, h.createSession)
	mux.HandleFunc("GET "+PathSessions, h.listSessions)
	mux.HandleFunc("DELETE "+PathSessions+"/{name}", h.removeSession)
	mux.HandleFunc("GET "+PathSessions+"/{name}/logs", h.sessionLogs)
	mux.HandleFunc("POST "+PathSessions+"/{name}/{action}", h.controlSession)
	mux.HandleFunc("POST "+PathSessions+"/{name}/workspace", h.prepareWorkspace)
	mux.HandleFunc("POST "+PathRunArgs, h.runArgs)
	mux.HandleFunc("GET "+PathDoctor, h.doctor)
	mux.HandleFunc("GET "+PathCA, h.ca)
	mux.HandleFunc("GET "+PathAudit, h.audit)
	mux.HandleFunc("GET "+PathAuditVerify, h.auditVerify)
	mux.HandleFunc("POST "+PathReload, h.reload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path)})
	})
	return h.logged(mux)
}

func (h *handler) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		h.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController find Flush on the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (h *handler) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		h.log.Debug("writing response", "err", err)
	}
}

func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status >= 500 {
		h.log.Warn("api error", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	h.writeJSON(w, status, errorBody{Error: err.Error()})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding request body: %v: %w", err, ErrInvalid)
	}
	return nil
}

// serveBody hands the request's JSON body, decoded into a Req, to call and
// answers with call's result under status, or with the error.
func serveBody[Req, Resp any](h *handler, w http.ResponseWriter, r *http.Request, status int, call func(context.Context, Req) (Resp, error)) {
	var req Req
	if err := decodeBody(r, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	v, err := call(r.Context(), req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeJSON(w, status, v)
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	st, err := h.b.Status(r.Context())
	h.reply(w, r, st, err)
}

func (h *handler) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, v)
}

func (h *handler) controlSession(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	switch action {
	case ActionStop, ActionStart, ActionRestart:
	default:
		h.writeError(w, r, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no session action %q (stop, start, restart)", action)})
		return
	}
	s, err := h.b.ControlSession(r.Context(), r.PathValue("name"), action)
	h.reply(w, r, s, err)
}

func (h *handler) prepareWorkspace(w http.ResponseWriter, r *http.Request) {
	ws, err := h.b.PrepareWorkspace(r.Context(), r.PathValue("name"))
	h.reply(w, r, ws, err)
}

func (h *handler) createSession(w http.ResponseWriter, r *http.Request) {
	serveBody(h, w, r, http.StatusCreated, h.b.CreateSession)
}

func (h *handler) listSessions(w http.ResponseWriter, r *http.Request) {
	ss, err := h.b.ListSessions(r.Context())
	if ss == nil {
		ss = []Session{}
	}
	h.reply(w, r, ss, err)
}

func (h *handler) removeSession(w http.ResponseWriter, r *http.Request) {
	if err := h.b.RemoveSession(r.Context(), r.PathValue("name")); err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) runArgs(w http.ResponseWriter, r *http.Request) {
	serveBody(h, w, r, http.StatusOK, h.b.RunArgs)
}

func (h *handler) doctor(w http.ResponseWriter, r *http.Request) {
	rep, err := h.b.Doctor(r.Context())
	h.reply(w, r, rep, err)
}

func (h *handler) ca(w http.ResponseWriter, r *http.Request) {
	ca, err := h.b.CA(r.Context())
	h.reply(w, r, ca, err)
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	if err := h.b.Reload(r.Context()); err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) sessionLogs(w http.ResponseWriter, r *http.Request) {
	follow, err := boolParam(r, "follow")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	name := r.PathValue("name")
	h.stream(w, r, "text/plain; charset=utf-8", func(ctx context.Context, out io.Writer) error {
		return h.b.SessionLogs(ctx, name, follow, out)
	})
}

func (h *handler) audit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQueryFrom(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.stream(w, r, "application/x-ndjson", func(ctx context.Context, out io.Writer) error {
		return h.b.Audit(ctx, q, out)
	})
}

func (h *handler) auditVerify(w http.ResponseWriter, r *http.Request) {
	v, ok := h.b.(AuditVerifier)
	if !ok {
		h.writeError(w, r, &Error{Status: http.StatusNotImplemented, Message: "this daemon cannot verify its audit log"})
		return
	}
	res, err := v.AuditVerify(r.Context())
	h.reply(w, r, res, err)
}

func auditQueryFrom(r *http.Request) (AuditQuery, error) {
	q := AuditQuery{Container: r.URL.Query().Get("container"), Host: r.URL.Query().Get("host")}
	var err error
	if q.Follow, err = boolParam(r, "follow"); err != nil {
		return q, err
	}
	if s := r.URL.Query().Get("lines"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("lines=%q is not a non-negative number: %w", s, ErrInvalid)
		}
		q.Lines = n
	}
	return q, nil
}

func boolParam(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%s=%q is not a boolean: %w", name, s, ErrInvalid)
	}
	return b, nil
}

// stream runs fn with a writer that sends the 200 header on first write and
// flushes after every write. An error before any byte becomes a normal error
// response; after, it goes in the trailer.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, contentType string, fn func(context.Context, io.Writer) error) {
	w.Header().Set("Trailer", TrailerError)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w), contentType: contentType}
	err := fn(r.Context(), fw)
	if fw.started() {
		if err != nil && !errors.Is(err, context.Canceled) {
			// Header values cannot hold line breaks.
			w.Header().Set(TrailerError, strings.NewReplacer("\r", " ", "\n", "; ").Replace(err.Error()))
		}
		return
	}
	if err != nil {
		w.Header().Del("Trailer")
		h.writeError(w, r, err)
		return
	}
	fw.start()
}

// flushWriter is safe for concurrent use: backends may copy stdout and
// stderr into it from two goroutines.
type flushWriter struct {
	mu          sync.Mutex
	w           http.ResponseWriter
	rc          *http.ResponseController
	contentType string
	begun       bool
}

func (f *flushWriter) start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startLocked()
}

func (f *flushWriter) startLocked() {
	if f.begun {
		return
	}
	f.begun = true
	f.w.Header().Set("Content-Type", f.contentType)
	f.w.Header().Set("X-Content-Type-Options", "nosniff")
	f.w.WriteHeader(http.StatusOK)
	_ = f.rc.Flush()
}

func (f *flushWriter) started() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begun
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startLocked()
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
}
