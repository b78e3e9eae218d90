package injector

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// SecretsDir is state_dir/secrets. Empty means environment only. A
	// missing directory is not an error; one readable by group or others
	// is.
	SecretsDir string
	// CredentialsFile is a KEY=value file (e.g.
	// /etc/clauderon/credentials.env) read on every reload, after the
	// environment and before SecretsDir. Empty means none; a missing file
	// is empty. It must be a regular file of the daemon's user, mode 0600
	// or stricter, not a symbolic link.
	CredentialsFile string
	// Environ returns the environment to read; nil means os.Environ.
	Environ func() []string
	// Names are credential names to resolve besides BuiltinCredentials,
	// the files present, and the names of the rules given to New.
	Names []string
	// PollInterval is how often Watch looks at the secrets directory and
	// the credentials file; zero means one second.
	PollInterval time.Duration
	// Logger receives reload results and malformed-credential warnings
	// (never values); nil discards.
	Logger *slog.Logger
}

// CredentialStatus describes one credential for status output. It never
// holds the value.
type CredentialStatus struct {
	Profile     string `json:"profile"`               // "default" or the profile name
	Name        string `json:"name"`                  // credential name
	Source      string `json:"source,omitempty"`      // "env GITHUB_TOKEN", "file /…/secrets/github"; empty when absent
	Present     bool   `json:"present"`               // found and well-formed
	Fingerprint string `json:"fingerprint,omitempty"` // Secret.Fingerprint
	Kind        string `json:"kind,omitempty"`        // "oauth", "api-key", "github-token", "npm-token", "token"
	Error       string `json:"error,omitempty"`       // why it is unusable, never the value
}

// Store resolves credential names to values. Readers see an immutable
// snapshot; Reload builds a new one and swaps it in atomically, so a
// request never sees half of a reload.
type Store struct {
	opts   StoreOptions
	logger *slog.Logger
	snap   atomic.Pointer[snapshot]

	mu     sync.Mutex // serializes Reload and guards wanted, warned
	wanted map[string]bool
	warned map[string]bool
}

type entry struct {
	name, source string
	secret       Secret
	err          error // format-independent problem; the secret is still kept for redaction

	formatWarned atomic.Bool // a rule's format-specific complaint was logged (once per snapshot)
}

type profileSet struct {
	display string            // "default" or the profile's name
	entries map[string]*entry // credential name → entry (absent names are missing)
}

type snapshot struct {
	profiles map[string]*profileSet // profileKey → set; "" is the default profile
	byName   map[string]*profileSet // display name → set, so the common lookup does not allocate
	redact   []string               // every known value and derived header forms, longest first
	replacer *strings.Replacer
	treeSig  string // Store.signature of the sources taken just before they were read
}

// NewStore reads the environment and the secrets directory once.
func NewStore(opts StoreOptions) (*Store, error) {
	if opts.Environ == nil {
		opts.Environ = os.Environ
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		opts:   opts,
		logger: logger.With("component", "injector"),
		wanted: map[string]bool{},
		warned: map[string]bool{},
	}
	for _, n := range BuiltinCredentials() {
		s.wanted[n] = true
	}
	for _, n := range opts.Names {
		if err := validateCredentialName(n); err != nil {
			return nil, fmt.Errorf("credential name: %w", err)
		}
		s.wanted[n] = true
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// want adds credential names (from rules) and reloads if any is new.
func (s *Store) want(names []string) error {
	s.mu.Lock()
	added := false
	for _, n := range names {
		if !s.wanted[n] {
			s.wanted[n] = true
			added = true
		}
	}
	s.mu.Unlock()
	if !added {
		return nil
	}
	return s.Reload()
}

// Reload re-reads the environment and the secrets directory and swaps the
// result in. On error the previous snapshot stays in force.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, err := s.load()
	if err != nil {
		return err
	}
	s.snap.Store(snap)
	for _, ps := range snap.profiles {
		for _, e := range ps.entries {
			if e.err != nil {
				s.warnOnceLocked(ps.display+"|"+e.name+"|"+e.source+"|"+e.secret.Fingerprint()+"|"+e.err.Error(),
					"credential unusable", "profile", ps.display, "credential", e.name, "source", e.source, "problem", e.err.Error())
			}
		}
	}
	return nil
}

// warnOnce logs msg the first time key is seen.
func (s *Store) warnOnce(key, msg string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warnOnceLocked(key, msg, args...)
}

func (s *Store) warnOnceLocked(key, msg string, args ...any) {
	if s.warned[key] {
		return
	}
	s.warned[key] = true
	s.logger.Warn(msg, args...)
}

// load builds a snapshot; s.mu is held.
func (s *Store) load() (*snapshot, error) {
	sig := s.signature()
	src := sources{env: parseEnviron(s.opts.Environ()), filePath: s.opts.CredentialsFile}
	var err error
	if src.file, err = readCredentialsFile(s.opts.CredentialsFile); err != nil {
		return nil, err
	}
	files, err := readSecretsDir(s.opts.SecretsDir)
	if err != nil {
		return nil, err
	}
	names := maps.Clone(s.wanted)
	for _, pf := range files {
		for n := range pf.files {
			names[credentialForFile(n)] = true
		}
	}
	profiles := map[string]*profileSet{"": resolveProfile("", DefaultProfile, names, src, files[""])}
	for key, display := range discoverProfiles(src, names, files) {
		profiles[key] = resolveProfile(key, display, names, src, files[key])
	}
	for _, v := range src.shadowed() {
		s.warnOnceLocked("shadowed|"+v, "a credential in the credentials file is shadowed by the daemon's environment, which wins; remove it from the environment (or the unit's Environment=) for the file to take effect",
			"variable", v, "file", s.opts.CredentialsFile)
	}
	snap := newSnapshot(profiles)
	snap.treeSig = sig
	snap.byName = make(map[string]*profileSet, len(profiles)+1)
	for _, ps := range profiles {
		snap.byName[ps.display] = ps
	}
	snap.byName[""] = profiles[""]
	return snap, nil
}

func newSnapshot(profiles map[string]*profileSet) *snapshot {
	seen := map[string]bool{}
	for _, ps := range profiles {
		for _, e := range ps.entries {
			v := e.secret.value()
			if v == "" {
				continue
			}
			seen[v] = true
			seen[base64.StdEncoding.EncodeToString([]byte("x-access-token:"+v))] = true
		}
	}
	redact := slices.Collect(maps.Keys(seen))
	// Longest first, so a value containing another is replaced whole.
	slices.SortFunc(redact, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(redact))
	for _, v := range redact {
		pairs = append(pairs, v, Redacted)
	}
	return &snapshot{profiles: profiles, redact: redact, replacer: strings.NewReplacer(pairs...)}
}

// Lookup returns the well-formed credential name for profile ("" or
// "default" for the default profile). A named profile never falls back to
// the default profile.
func (s *Store) Lookup(profile, name string) (Secret, bool) {
	e, ok := s.lookupEntry(profile, name)
	if !ok || e.err != nil {
		return Secret{}, false
	}
	return e.secret, true
}

func (s *Store) lookupEntry(profile, name string) (*entry, bool) {
	snap := s.snap.Load()
	ps, ok := snap.byName[profile]
	if !ok {
		if ps, ok = snap.profiles[profileKey(profile)]; !ok {
			return nil, false
		}
	}
	e, ok := ps.entries[name]
	return e, ok
}

// Redact replaces every known credential value (of any profile, well-formed
// or not, and its git Basic form) in text with [REDACTED]. It is the Scrub
// function for the audit writer and any other text that leaves the daemon.
func (s *Store) Redact(text string) string {
	snap := s.snap.Load()
	if len(snap.redact) == 0 || text == "" {
		return text
	}
	return snap.replacer.Replace(text)
}

// containsKnown reports whether text contains any known credential value.
func (snap *snapshot) containsKnown(text string) bool {
	for _, v := range snap.redact {
		if strings.Contains(text, v) {
			return true
		}
	}
	return false
}

// Summary lists every credential of every profile, sorted by profile then
// name, with where it came from and a fingerprint: never the value.
// Built-in names missing from the default profile are listed as absent.
func (s *Store) Summary() []CredentialStatus {
	snap := s.snap.Load()
	var out []CredentialStatus
	for _, ps := range snap.profiles {
		for _, e := range ps.entries {
			st := CredentialStatus{Profile: ps.display, Name: e.name, Source: e.source, Present: e.err == nil,
				Fingerprint: e.secret.Fingerprint(), Kind: credentialKind(e.secret.value())}
			if e.err != nil {
				st.Error = e.err.Error()
			}
			out = append(out, st)
		}
		if ps.display == DefaultProfile {
			for _, n := range BuiltinCredentials() {
				if _, ok := ps.entries[n]; !ok {
					out = append(out, CredentialStatus{Profile: DefaultProfile, Name: n})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b CredentialStatus) int {
		if a.Profile != b.Profile {
			if a.Profile == DefaultProfile {
				return -1
			}
			if b.Profile == DefaultProfile {
				return 1
			}
			return strings.Compare(a.Profile, b.Profile)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Profiles returns the named profiles known to the store, sorted (the
// default profile is not listed).
func (s *Store) Profiles() []string {
	var out []string
	for key, ps := range s.snap.Load().profiles {
		if key != "" {
			out = append(out, ps.display)
		}
	}
	slices.Sort(out)
	return out
}

// Watch reloads the store whenever a file under the secrets directory or
// the credentials file changes (polled every PollInterval: names, sizes,
// modes, mtimes, inodes) until ctx is done, then returns nil. A failed
// reload is logged and the previous credentials stay in force.
func (s *Store) Watch(ctx context.Context) error {
	if s.opts.SecretsDir == "" && s.opts.CredentialsFile == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	failed := "" // signature of the tree whose reload last failed: not retried until it changes
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sig := s.signature()
		if sig == s.snap.Load().treeSig || sig == failed {
			continue
		}
		if err := s.Reload(); err != nil {
			failed = sig
			s.logger.Error("reloading credentials; keeping the previous ones", "err", err)
			continue
		}
		s.logger.Info("credentials reloaded", "dir", s.opts.SecretsDir, "file", s.opts.CredentialsFile)
	}
}

// signature summarizes every credential source on disk.
func (s *Store) signature() string {
	return treeSignature(s.opts.SecretsDir) + "\n" + fileSignature(s.opts.CredentialsFile)
}
