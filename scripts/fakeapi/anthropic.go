package fakeapi

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Reply is the text every fake Messages API answer carries; tests look for it
// in the client's output.
const Reply = "Hello from the fake Anthropic API behind clauderond."

// Request is what a fake server remembers about one request. It never holds a
// credential value: Auth says only how the request authenticated.
type Request struct {
	Time   time.Time `json:"time"`
	Server string    `json:"server"`
	Host   string    `json:"host"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Query  string    `json:"query,omitempty"`
	Proto  string    `json:"proto"`
	// Auth is "real" (the expected credential), "placeholder" (a clauderon
	// placeholder leaked through), "none", or "wrong".
	Auth    string `json:"auth"`
	Stream  bool   `json:"stream,omitempty"`
	Status  int    `json:"status"`
	Unknown bool   `json:"unknown,omitempty"`
}

// newRequest starts the log record of r as server received it; auth says
// how it authenticated (see authOf).
func newRequest(server string, r *http.Request, auth string) Request {
	return Request{Time: time.Now(), Server: server, Host: r.Host, Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, Proto: r.Proto, Auth: auth}
}

// authOf says how a request authenticated (Request.Auth): "real" when it
// carried the expected credential, else "none" when every value it
// presented is empty, "placeholder" when one holds a clauderon placeholder,
// and "wrong" otherwise.
func authOf(real bool, presented ...string) string {
	switch {
	case real:
		return "real"
	case !slices.ContainsFunc(presented, func(v string) bool { return v != "" }):
		return "none"
	case slices.ContainsFunc(presented, containsPlaceholder):
		return "placeholder"
	}
	return "wrong"
}

// Log is a concurrency-safe request log shared by the fake servers.
type Log struct {
	// OnAdd, when set, is called with every request after it is logged.
	OnAdd func(Request)

	mu   sync.Mutex
	reqs []Request
}

// Add appends r.
func (l *Log) Add(r Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
	if l.OnAdd != nil {
		l.OnAdd(r)
	}
}

// All returns a copy of every request seen so far.
func (l *Log) All() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Request(nil), l.reqs...)
}

// placeholders are the values clauderon hands containers instead of real
// credentials (DESIGN.md, operator contract).
var placeholders = []string{
	"sk-ant-oat01-clauderon-proxy-placeholder",
	"sk-openai-clauderon-proxy-placeholder",
	"clauderon-proxy",
}

// Anthropic is a fake of the Anthropic API as Claude Code uses it in print
// mode. /v1/messages answers only `Authorization: Bearer <OAuthToken>` (or
// `x-api-key: <APIKey>` when set); other paths answer 200 `{}` and are
// logged as unknown so a new Claude Code call shows up in the test log.
type Anthropic struct {
	OAuthToken string
	APIKey     string
	Log        *Log
}

func (a *Anthropic) auth(r *http.Request) string {
	authz := r.Header.Get("Authorization")
	key := r.Header.Get("X-Api-Key")
	real := a.OAuthToken != "" && equal(authz, "Bearer "+a.OAuthToken) || a.APIKey != "" && equal(key, a.APIKey)
	return authOf(real, authz, key)
}

// ServeHTTP implements http.Handler.
func (a *Anthropic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := newRequest("anthropic", r, a.auth(r))
	defer func() { a.Log.Add(rec) }()
	switch {
	case strings.HasPrefix(r.URL.Path, "/v1/messages"):
		rec.Status, rec.Stream = a.messages(w, r, rec.Auth)
	case r.URL.Path == "/api/hello":
		rec.Status = writeJSON(w, http.StatusOK, map[string]string{"message": "hello"})
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		rec.Unknown = true
		rec.Status = writeJSON(w, http.StatusOK, map[string]any{})
	}
}

func (a *Anthropic) messages(w http.ResponseWriter, r *http.Request, auth string) (status int, stream bool) {
	if auth != "real" {
		return writeJSON(w, http.StatusUnauthorized, map[string]any{"type": "error",
			"error": map[string]string{"type": "authentication_error", "message": "invalid credential (auth=" + auth + ")"}}), false
	}
	var body struct {
		Model    string            `json:"model"`
		Stream   bool              `json:"stream"`
		Messages []json.RawMessage `json:"messages"`
		Tools    []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&body); err != nil {
		return writeJSON(w, http.StatusBadRequest, map[string]any{"type": "error",
			"error": map[string]string{"type": "invalid_request_error", "message": "decoding body: " + err.Error()}}), false
	}
	if body.Model == "" {
		body.Model = "claude-fake-e2e"
	}
	if strings.HasSuffix(r.URL.Path, "/count_tokens") {
		return writeJSON(w, http.StatusOK, map[string]int{"input_tokens": 12}), false
	}
	if wantsFailure(body.Messages) {
		return writeJSON(w, http.StatusBadRequest, map[string]any{"type": "error",
			"error": map[string]string{"type": "invalid_request_error", "message": "the e2e script refuses this prompt"}}), false
	}
	if call, ok := scriptedToolCall(body.Messages, body.Tools); ok {
		if !body.Stream {
			return writeJSON(w, http.StatusOK, toolUseMessage(body.Model, call)), false
		}
		streamToolUse(w, body.Model, call)
		return http.StatusOK, true
	}
	reply := Reply
	if n := countToolResults(body.Messages); n > 0 {
		reply = Reply + " " + ScriptDone
	}
	if !body.Stream {
		return writeJSON(w, http.StatusOK, message(body.Model, reply)), false
	}
	streamSSE(w, body.Model, reply)
	return http.StatusOK, true
}

func message(model, text string) map[string]any {
	return map[string]any{
		"id": "msg_fake_e2e", "type": "message", "role": "assistant", "model": model,
		"content":     []map[string]string{{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]int{"input_tokens": 12, "output_tokens": 12},
	}
}

// startStream sends the head of an event stream and returns the
// message_start's message, still without content.
func startStream(w http.ResponseWriter, model string) map[string]any {
	startEventStream(w)
	start := message(model, "")
	start["content"] = []any{}
	start["stop_reason"] = nil
	return start
}

// streamSSE writes the event sequence of a real streamed Messages answer,
// flushing each event, with a short pause so buffering proxies are visible.
func streamSSE(w http.ResponseWriter, model, reply string) {
	start := startStream(w, model)
	start["usage"] = map[string]int{"input_tokens": 12, "output_tokens": 1}
	events := []map[string]any{
		{"type": "message_start", "message": start},
		{"type": "content_block_start", "index": 0, "content_block": map[string]string{"type": "text", "text": ""}},
		{"type": "ping"},
	}
	for _, word := range strings.SplitAfter(reply, " ") {
		events = append(events, blockDelta(map[string]string{"type": "text_delta", "text": word}))
	}
	writeEvents(w, append(events, messageEnd("end_turn", 12)...), 5*time.Millisecond)
}

// blockDelta is the event that adds delta to the (only) content block of a
// streamed Messages answer.
func blockDelta(delta map[string]string) map[string]any {
	return map[string]any{"type": "content_block_delta", "index": 0, "delta": delta}
}

// messageEnd is the tail of a streamed Messages answer with one content
// block: the block's stop, the stop reason and output token count, and
// message_stop.
func messageEnd(stopReason string, outputTokens int) []map[string]any {
	return []map[string]any{
		{"type": "content_block_stop", "index": 0},
		{"type": "message_delta", "delta": map[string]any{"stop_reason": stopReason, "stop_sequence": nil},
			"usage": map[string]int{"output_tokens": outputTokens}},
		{"type": "message_stop"},
	}
}

// startEventStream sends the status and headers of a Server-Sent Events
// answer.
func startEventStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// writeEvents writes each event as a Server-Sent Event named by its "type",
// flushing it and pausing after it so buffering proxies are visible. It
// stops at the first failed write (the client went away).
func writeEvents(w http.ResponseWriter, events []map[string]any, pause time.Duration) {
	flusher, _ := w.(http.Flusher)
	for _, ev := range events {
		data, _ := json.Marshal(ev)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev["type"], data); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		time.Sleep(pause)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return status
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func containsPlaceholder(v string) bool {
	for _, p := range placeholders {
		if strings.Contains(v, p) {
			return true
		}
	}
	return false
}
