package fakeapi

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Tokens is a fake upstream that answers which of its known bearer
// tokens a request carried ("token=<name>"), "placeholder" for a
// clauderon placeholder, "none" or "other": tests read what clauderond
// injected without the fake holding anything but test values.
type Tokens struct {
	mu    sync.Mutex
	known map[string]string // bearer token → name
	seen  []string
}

// NewTokens returns a fake knowing names for tokens (name → token).
func NewTokens(tokens map[string]string) *Tokens {
	t := &Tokens{known: map[string]string{}}
	for name, tok := range tokens {
		t.known[tok] = name
	}
	return t
}

// Set adds or replaces a token's name.
func (t *Tokens) Set(name, token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.known[token] = name
}

// Seen returns the names the fake answered, in order.
func (t *Tokens) Seen() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.seen...)
}

func (t *Tokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := r.Header.Get("Authorization")
	t.mu.Lock()
	which, ok := t.known[strings.TrimPrefix(a, "Bearer ")]
	switch {
	case ok:
	case a == "":
		which = "none"
	case containsPlaceholder(a):
		which = "placeholder"
	default:
		which = "other"
	}
	t.seen = append(t.seen, which)
	t.mu.Unlock()
	fmt.Fprintf(w, "token=%s\n", which)
}
