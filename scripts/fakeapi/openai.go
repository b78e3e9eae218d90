package fakeapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// OpenAIReply is the text every fake Responses API answer carries; tests
// look for it in the client's output.
const OpenAIReply = "Hello from the fake OpenAI API behind clauderond."

// OpenAIPaths are the paths the OpenAI fake implements (Codex calls only
// /v1/responses); WithFallback sends the others elsewhere.
var OpenAIPaths = []string{"/v1/responses", "/v1/models"}

// OpenAI is a fake of the OpenAI API as the Codex CLI uses it with an API
// key: POST /v1/responses streams a Responses API answer as Server-Sent
// Events (response.created … response.completed). Every path answers only
// `Authorization: Bearer <APIKey>`; anything else (a placeholder, no key)
// gets 401 like the real API. Requests are recorded in Log; a path it does
// not know is logged as unknown and answered 404, so a new Codex call shows
// up in the test log.
type OpenAI struct {
	APIKey string
	Log    *Log
}

// WithFallback serves OpenAIPaths from o and every other path from
// fallback (the e2e suite's echo server, which other tests call on
// api.openai.com).
func (o *OpenAI) WithFallback(fallback http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, p := range OpenAIPaths {
		mux.Handle(p, o)
	}
	mux.Handle("/", fallback)
	return mux
}

func (o *OpenAI) auth(r *http.Request) string {
	authz := r.Header.Get("Authorization")
	return authOf(o.APIKey != "" && equal(authz, "Bearer "+o.APIKey), authz)
}

// ServeHTTP implements http.Handler.
func (o *OpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := newRequest("openai", r, o.auth(r))
	defer func() { o.Log.Add(rec) }()
	if rec.Auth != "real" {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 16<<20))
		rec.Status = openAIError(w, http.StatusUnauthorized, "invalid_api_key",
			"Incorrect API key provided (auth="+rec.Auth+").")
		return
	}
	switch {
	case r.URL.Path == "/v1/responses" && r.Method == http.MethodPost:
		rec.Status, rec.Stream = o.responses(w, r)
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		rec.Status = writeJSON(w, http.StatusOK, map[string]any{"object": "list",
			"data": []map[string]any{{"id": "gpt-fake-e2e", "object": "model", "created": 0, "owned_by": "clauderon-e2e"}}})
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 16<<20))
		rec.Unknown = true
		rec.Status = openAIError(w, http.StatusNotFound, "unknown_url", "Unknown request URL: "+r.Method+" "+r.URL.Path)
	}
}

func openAIError(w http.ResponseWriter, status int, code, msg string) int {
	return writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "param": nil, "code": code}})
}

// responses answers POST /v1/responses: a streamed answer when the body
// asks for "stream": true (Codex always does), else the finished response
// object.
func (o *OpenAI) responses(w http.ResponseWriter, r *http.Request) (status int, stream bool) {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 16<<20))
		return openAIError(w, http.StatusBadRequest, "unsupported_encoding", "the fake does not decode Content-Encoding "+ce), false
	}
	var body struct {
		Model  string          `json:"model"`
		Stream bool            `json:"stream"`
		Input  json.RawMessage `json:"input"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&body); err != nil {
		return openAIError(w, http.StatusBadRequest, "invalid_json", "decoding body: "+err.Error()), false
	}
	if body.Model == "" {
		body.Model = "gpt-fake-e2e"
	}
	if !body.Stream {
		return writeJSON(w, http.StatusOK, responseObject(body.Model, "completed", OpenAIReply)), false
	}
	streamResponse(w, body.Model, OpenAIReply)
	return http.StatusOK, true
}

const (
	fakeResponseID = "resp_fake_e2e"
	fakeMessageID  = "msg_fake_e2e"
)

func outputMessage(status, text string) map[string]any {
	content := []map[string]any{}
	if status == "completed" {
		content = append(content, map[string]any{"type": "output_text", "text": text, "annotations": []any{}})
	}
	return map[string]any{"type": "message", "id": fakeMessageID, "role": "assistant", "status": status, "content": content}
}

// responseObject is a Responses API response object; text is the output
// message when status is "completed".
func responseObject(model, status, text string) map[string]any {
	out := map[string]any{
		"id": fakeResponseID, "object": "response", "created_at": time.Now().Unix(), "status": status,
		"model": model, "output": []any{}, "error": nil, "incomplete_details": nil,
		"parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{},
	}
	if status == "completed" {
		out["output"] = []any{outputMessage("completed", text)}
		out["usage"] = map[string]any{
			"input_tokens": 12, "input_tokens_details": map[string]int{"cached_tokens": 0},
			"output_tokens": 12, "output_tokens_details": map[string]int{"reasoning_tokens": 0},
			"total_tokens": 24,
		}
	}
	return out
}

// streamResponse writes the event sequence of a streamed Responses API
// answer with one assistant message, flushing each event, with a short
// pause so buffering proxies are visible. Each event carries its type in
// the SSE event name and in the JSON "type" field, and a sequence_number.
func streamResponse(w http.ResponseWriter, model, reply string) {
	startEventStream(w)
	part := func(text string) map[string]any {
		return map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
	}
	item := map[string]any{"item_id": fakeMessageID, "output_index": 0, "content_index": 0}
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	events := []map[string]any{
		{"type": "response.created", "response": responseObject(model, "in_progress", "")},
		{"type": "response.in_progress", "response": responseObject(model, "in_progress", "")},
		{"type": "response.output_item.added", "output_index": 0, "item": outputMessage("in_progress", "")},
		with(item, "type", "response.content_part.added", "part", part("")),
	}
	for _, word := range strings.SplitAfter(reply, " ") {
		events = append(events, with(item, "type", "response.output_text.delta", "delta", word, "logprobs", []any{}))
	}
	events = append(events,
		with(item, "type", "response.output_text.done", "text", reply, "logprobs", []any{}),
		with(item, "type", "response.content_part.done", "part", part(reply)),
		map[string]any{"type": "response.output_item.done", "output_index": 0, "item": outputMessage("completed", reply)},
		map[string]any{"type": "response.completed", "response": responseObject(model, "completed", reply)},
	)
	for i, ev := range events {
		ev["sequence_number"] = i
	}
	writeEvents(w, events, 5*time.Millisecond)
}
