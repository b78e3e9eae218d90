package injector

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
)

func parseEnviron(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, dup := env[k]; !dup {
			env[k] = v
		}
	}
	return env
}

// sources are the variables a credential can come from besides the
// secrets directory: the daemon's environment, then the credentials file.
type sources struct {
	env, file map[string]string
	filePath  string
}

// lookup returns the value of variable ev and where it came from.
func (src sources) lookup(ev string) (value, source string) {
	if v := src.env[ev]; v != "" {
		return v, "env " + ev
	}
	if v := src.file[ev]; v != "" {
		return v, "file " + src.filePath + " " + ev
	}
	return "", ""
}

// shadowed lists variables set, differently, in both the environment and
// the file (sorted).
func (src sources) shadowed() []string {
	var out []string
	for k, v := range src.file {
		if e := src.env[k]; e != "" && v != "" && e != v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// discoverProfiles finds named profiles in directories and in
// CLAUDERON_PROFILE_<P>_<ENV> variables for the wanted names.
func discoverProfiles(src sources, names map[string]bool, files map[string]*profileFiles) map[string]string {
	out := map[string]string{}
	for key, pf := range files {
		if key != "" {
			out[key] = pf.display
		}
	}
	vars := maps.Clone(src.file)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, src.env)
	for k, v := range vars {
		rest, ok := strings.CutPrefix(k, ProfileEnvPrefix)
		if !ok || v == "" {
			continue
		}
		for n := range names {
			for _, e := range EnvNames(n) {
				p, ok := strings.CutSuffix(rest, "_"+e)
				if ok && p != "" {
					if _, seen := out[p]; !seen {
						out[p] = strings.ToLower(p)
					}
				}
			}
		}
	}
	return out
}

// resolveProfile resolves every wanted name for one profile: environment
// first (in EnvNames order), then files (in FileNames order). A named
// profile never falls back to the default profile.
func resolveProfile(key, display string, names map[string]bool, src sources, pf *profileFiles) *profileSet {
	ps := &profileSet{display: display, entries: map[string]*entry{}}
	for n := range names {
		if e := resolveOne(key, n, src, pf); e != nil {
			ps.entries[n] = e
		}
	}
	return ps
}

func resolveOne(key, name string, src sources, pf *profileFiles) *entry {
	for _, ev := range EnvNames(name) {
		if key != "" {
			ev = ProfileEnvPrefix + key + "_" + ev
		}
		if v, from := src.lookup(ev); v != "" {
			return &entry{name: name, source: from, secret: NewSecret(v), err: checkValue(v)}
		}
	}
	if pf == nil {
		return nil
	}
	for _, f := range FileNames(name) {
		if v, ok := pf.files[f]; ok {
			return &entry{name: name, source: "file " + filepath.Join(pf.dir, f), secret: NewSecret(v), err: checkValue(v)}
		}
	}
	return nil
}
