package fakeapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"time"
)

// The fake API can script an agent: a prompt holding `e2e-write:NAME`
// sent with Claude Code's tools makes the fake answer with tool calls, the
// way the real API does, and Claude Code executes them in its container:
//
//  1. Write /workspace/NAME with WriteContent,
//  2. Bash: git add NAME && git commit (the session's branch gets it),
//  3. after both tool results: the final text, Reply + ScriptDone.
//
// The step is the number of tool results already in the conversation.

// WriteContent is what the scripted Write puts in the file.
const WriteContent = "written by the agent through clauderond\n"

// ScriptDone ends the final answer of a scripted conversation.
const ScriptDone = "The file is written and committed."

var writeMarker = regexp.MustCompile(`e2e-write:([A-Za-z0-9._-]+)`)

// FailMarker in a prompt makes the fake refuse the request (400), so the
// agent fails the way it does on a bad request.
const FailMarker = "e2e-fail-please"

func wantsFailure(messages []json.RawMessage) bool {
	for _, m := range messages {
		if bytes.Contains(m, []byte(FailMarker)) {
			return true
		}
	}
	return false
}

// toolCall is one tool_use block to send.
type toolCall struct {
	id, name string
	input    map[string]string
}

// scriptedToolCall returns the next tool call of the script, if the
// conversation asks for one and the request offers the tools.
func scriptedToolCall(messages []json.RawMessage, tools []struct {
	Name string `json:"name"`
}) (toolCall, bool) {
	have := map[string]bool{}
	for _, t := range tools {
		have[t.Name] = true
	}
	if !have["Write"] || !have["Bash"] || len(messages) == 0 {
		return toolCall{}, false
	}
	var m [][]byte
	for _, msg := range messages {
		if m = writeMarker.FindSubmatch(msg); m != nil {
			break
		}
	}
	if m == nil {
		return toolCall{}, false
	}
	name := string(m[1])
	switch countToolResults(messages) {
	case 0:
		return toolCall{id: "toolu_e2e_write", name: "Write",
			input: map[string]string{"file_path": "/workspace/" + name, "content": WriteContent}}, true
	case 1:
		return toolCall{id: "toolu_e2e_commit", name: "Bash",
			input: map[string]string{"command": fmt.Sprintf("cd /workspace && git add %s && git commit -q -m 'agent: add %s'", name, name),
				"description": "Commit the new file"}}, true
	}
	return toolCall{}, false
}

// countToolResults counts tool_result blocks in the conversation.
func countToolResults(messages []json.RawMessage) int {
	n := 0
	for _, m := range messages {
		n += bytes.Count(m, []byte(`"tool_result"`))
	}
	return n
}

func toolUseMessage(model string, c toolCall) map[string]any {
	msg := message(model, "")
	msg["content"] = []map[string]any{{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}}
	msg["stop_reason"] = "tool_use"
	return msg
}

// streamToolUse streams a tool_use block the way the real API does: the
// input arrives as input_json_delta pieces.
func streamToolUse(w http.ResponseWriter, model string, c toolCall) {
	start := startStream(w, model)
	input, _ := json.Marshal(c.input)
	events := []map[string]any{
		{"type": "message_start", "message": start},
		{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "tool_use", "id": c.id, "name": c.name, "input": map[string]any{}}},
	}
	for _, piece := range chunks(string(input), 24) {
		events = append(events, blockDelta(map[string]string{"type": "input_json_delta", "partial_json": piece}))
	}
	writeEvents(w, append(events, messageEnd("tool_use", 20)...), 2*time.Millisecond)
}

func chunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}
