package fakeapi

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

const testOpenAIKey = "sk-proj-UNIT-REAL-abc123"

const responsesBody = `{"model":"gpt-x","stream":true,"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"say hi"}]}]}`

func TestOpenAI_RefusesAnythingButTheRealKey(t *testing.T) {
	log := &Log{}
	s, c, _ := serve(t, &OpenAI{APIKey: testOpenAIKey, Log: log}, "api.openai.com")
	for _, tc := range []struct{ name, authz, wantAuth string }{
		{"none", "", "none"},
		{"placeholder", "Bearer sk-openai-clauderon-proxy-placeholder", "placeholder"},
		{"wrong", "Bearer sk-proj-other", "wrong"},
		{"key_without_bearer", testOpenAIKey, "wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, c, "https://"+s.Addr+"/v1/responses", tc.authz, responsesBody)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"invalid_api_key"`) {
				t.Fatalf("status = %d body %s, want 401 invalid_api_key", resp.StatusCode, body)
			}
			all := log.All()
			if got := all[len(all)-1]; got.Auth != tc.wantAuth || got.Server != "openai" || got.Status != 401 {
				t.Errorf("log = %+v, want auth %q", got, tc.wantAuth)
			}
		})
	}
}

// TestOpenAI_StreamsAResponse reads the stream like Codex: each data line
// is JSON with a "type" equal to the event name; the deltas make up the
// reply, and response.completed carries the id, the finished message and
// the usage.
func TestOpenAI_StreamsAResponse(t *testing.T) {
	log := &Log{}
	s, c, _ := serve(t, &OpenAI{APIKey: testOpenAIKey, Log: log}, "api.openai.com")
	resp := post(t, c, "https://"+s.Addr+"/v1/responses", "Bearer "+testOpenAIKey, responsesBody)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	var text strings.Builder
	var completed struct {
		Response struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Output []struct {
				Type    string `json:"type"`
				Role    string `json:"role"`
				Content []struct{ Type, Text string }
			} `json:"output"`
			Usage struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
				TotalTokens  int `json:"total_tokens"`
			} `json:"usage"`
		} `json:"response"`
	}
	name := ""
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			name = ev
			events = append(events, ev)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var d struct {
			Type  string `json:"type"`
			Delta string `json:"delta"`
			Seq   *int   `json:"sequence_number"`
		}
		if err := json.Unmarshal([]byte(data), &d); err != nil {
			t.Fatalf("bad data line %q: %v", data, err)
		}
		if d.Type != name || d.Seq == nil || *d.Seq != len(events)-1 {
			t.Errorf("data type %q seq %v after event %q (#%d)", d.Type, d.Seq, name, len(events)-1)
		}
		if d.Type == "response.output_text.delta" {
			text.WriteString(d.Delta)
		}
		if d.Type == "response.completed" {
			if err := json.Unmarshal([]byte(data), &completed); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
	if len(events) < 8 || strings.Join(events[:4], " ") != strings.Join(want, " ") {
		t.Errorf("events start %v, want %v", events, want)
	}
	wantEnd := []string{"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if len(events) < 8 || strings.Join(events[len(events)-4:], " ") != strings.Join(wantEnd, " ") {
		t.Errorf("events end %v, want %v", events, wantEnd)
	}
	if text.String() != OpenAIReply {
		t.Errorf("streamed text = %q, want %q", text.String(), OpenAIReply)
	}
	r := completed.Response
	if r.ID == "" || r.Status != "completed" || len(r.Output) != 1 || r.Output[0].Role != "assistant" ||
		len(r.Output[0].Content) != 1 || r.Output[0].Content[0].Text != OpenAIReply || r.Usage.TotalTokens != 24 {
		t.Errorf("response.completed = %+v", r)
	}
	if got := log.All(); len(got) != 1 || got[0].Auth != "real" || !got[0].Stream || got[0].Status != 200 || got[0].Path != "/v1/responses" {
		t.Errorf("log = %+v", got)
	}
}

func TestOpenAI_NonStreamingAndModels(t *testing.T) {
	s, c, _ := serve(t, &OpenAI{APIKey: testOpenAIKey, Log: &Log{}}, "api.openai.com")
	resp := post(t, c, "https://"+s.Addr+"/v1/responses", "Bearer "+testOpenAIKey, `{"model":"m","input":"say hi"}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"completed"`) || !strings.Contains(string(body), OpenAIReply) {
		t.Errorf("non-streaming answer %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+s.Addr+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+testOpenAIKey)
	mresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer mresp.Body.Close()
	body, _ = io.ReadAll(mresp.Body)
	if mresp.StatusCode != 200 || !strings.Contains(string(body), `"object":"list"`) {
		t.Errorf("models %d %s", mresp.StatusCode, body)
	}
}

// TestOpenAI_WithFallback: the OpenAI paths reach the fake, the others the
// fallback; an unknown path on the fake itself is logged as unknown.
func TestOpenAI_WithFallback(t *testing.T) {
	log := &Log{}
	o := &OpenAI{APIKey: testOpenAIKey, Log: log}
	s, c, _ := serve(t, o.WithFallback(&Echo{Name: "echo", Secrets: map[string]string{"openai": testOpenAIKey}, Log: log}), "api.openai.com")
	resp := post(t, c, "https://"+s.Addr+"/v1/chat/completions", "Bearer "+testOpenAIKey, `{}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Bearer <real:openai>") {
		t.Errorf("fallback answer %d %s", resp.StatusCode, body)
	}
	resp = post(t, c, "https://"+s.Addr+"/v1/responses", "Bearer "+testOpenAIKey, `{"model":"m"}`)
	io.Copy(io.Discard, resp.Body)
	if got := log.All(); len(got) != 2 || got[0].Server != "echo" || got[1].Server != "openai" || got[1].Status != 200 {
		t.Errorf("log = %+v", got)
	}

	log2 := &Log{}
	s2, c2, _ := serve(t, &OpenAI{APIKey: testOpenAIKey, Log: log2}, "api.openai.com")
	resp = post(t, c2, "https://"+s2.Addr+"/v1/realtime/sessions", "Bearer "+testOpenAIKey, `{}`)
	io.Copy(io.Discard, resp.Body)
	if r := log2.All()[0]; resp.StatusCode != 404 || !r.Unknown || r.Path != "/v1/realtime/sessions" {
		t.Errorf("unknown path: %d %+v", resp.StatusCode, r)
	}
}

func TestOpenAI_RefusesCompressedBodies(t *testing.T) {
	s, c, _ := serve(t, &OpenAI{APIKey: testOpenAIKey, Log: &Log{}}, "api.openai.com")
	req, _ := http.NewRequest(http.MethodPost, "https://"+s.Addr+"/v1/responses", strings.NewReader("\x28\xb5\x2f\xfd"))
	req.Header.Set("Authorization", "Bearer "+testOpenAIKey)
	req.Header.Set("Content-Encoding", "zstd")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400 for a body the fake cannot read", resp.StatusCode)
	}
}
