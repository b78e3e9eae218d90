// Package envvars reads a process environment, a list of KEY=value strings
// as os.Environ returns it, into a map. The daemon's configuration loader
// and the CLI's socket discovery both read it, and share no other package.
// It holds no policy about which variables mean what.
package envvars

import "strings"

// Map returns the variables of environ by name. Where a name appears more
// than once the first one wins, as os.Getenv answers; entries without "="
// are skipped. A nil environ gives an empty map (callers that mean the
// process environment pass os.Environ()).
func Map(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if _, dup := m[k]; !dup {
				m[k] = v
			}
		}
	}
	return m
}
