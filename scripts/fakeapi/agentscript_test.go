package fakeapi

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScriptedToolCalls(t *testing.T) {
	tools := []struct {
		Name string `json:"name"`
	}{{"Bash"}, {"Write"}, {"Read"}}
	user := json.RawMessage(`{"role":"user","content":[{"type":"text","text":"please e2e-write:hello.txt"}]}`)
	result := func(id string) json.RawMessage {
		return json.RawMessage(`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + id + `","content":"ok"}]}`)
	}
	call, ok := scriptedToolCall([]json.RawMessage{user}, tools)
	if !ok || call.name != "Write" || call.input["file_path"] != "/workspace/hello.txt" || call.input["content"] != WriteContent {
		t.Fatalf("step 1 = %+v %v", call, ok)
	}
	call, ok = scriptedToolCall([]json.RawMessage{user, json.RawMessage(`{"role":"assistant"}`), result("toolu_e2e_write")}, tools)
	if !ok || call.name != "Bash" || !strings.Contains(call.input["command"], "git commit") {
		t.Fatalf("step 2 = %+v %v", call, ok)
	}
	if _, ok := scriptedToolCall([]json.RawMessage{user, result("a"), result("b")}, tools); ok {
		t.Error("step 3 is the final text, not another tool call")
	}
	if _, ok := scriptedToolCall([]json.RawMessage{user}, tools[2:]); ok {
		t.Error("a request without the Write and Bash tools (a side call) got a tool call")
	}
	if _, ok := scriptedToolCall([]json.RawMessage{json.RawMessage(`{"role":"user","content":"say hi"}`)}, tools); ok {
		t.Error("a prompt without the marker got a tool call")
	}
}
