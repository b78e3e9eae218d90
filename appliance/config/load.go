package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// SystemFile is read when no file is named and it exists.
const SystemFile = "/etc/clauderon/config.yaml"

// systemFileForTest is SystemFile; tests point it elsewhere so a config
// installed on the test machine cannot leak in.
var systemFileForTest = SystemFile

// EnvPrefix prefixes every environment override: key network.subnet is
// CLAUDERON_NETWORK_SUBNET.
const EnvPrefix = "CLAUDERON"

// LoadOptions says where configuration comes from. Precedence, highest first:
// flags that were set, CLAUDERON_* environment variables, the file, defaults.
type LoadOptions struct {
	// File is the YAML file to read (an error if missing). "" → $CLAUDERON_CONFIG,
	// then SystemFile if it exists, else no file.
	File string
	// Env is consulted for the default state_dir (SUDO_USER, HOME) and for
	// CLAUDERON_CONFIG. nil → os.Environ(). CLAUDERON_<KEY> overrides are read
	// by viper from the process environment.
	Env []string
	// Flags, if non-nil: every flag whose name, with "-" read as "_", is a
	// config key (e.g. --state-dir, --network.subnet) overrides it when set.
	Flags *pflag.FlagSet
}

// Load builds the effective configuration and validates it.
func Load(opts LoadOptions) (*Config, error) {
	env := envMap(opts.Env)
	v := viper.NewWithOptions(viper.EnvKeyReplacer(strings.NewReplacer(".", "_")))
	v.SetEnvPrefix(EnvPrefix)
	keys, err := registerDefaults(v)
	if err != nil {
		return nil, err
	}
	v.AllowEmptyEnv(true)
	v.AutomaticEnv()
	if err := readFile(v, opts.File, env); err != nil {
		return nil, err
	}
	if err := bindFlags(v, opts.Flags, keys); err != nil {
		return nil, err
	}
	if err := checkUnknownKeys(v.AllKeys(), keys); err != nil {
		return nil, err
	}
	cfg := &Config{}
	if err := v.UnmarshalExact(cfg, viper.DecodeHook(decodeHook())); err != nil {
		return nil, decodeError(err)
	}
	if cfg.StateDir == "" {
		dir, err := DefaultStateDir(opts.Env)
		if err != nil {
			return nil, err
		}
		cfg.StateDir = dir
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DefaultStateDir is ~/.clauderon of the invoking user: under sudo (SUDO_USER
// set and not root) that user's home, else $HOME, else the current user's
// home from the passwd database. env nil → os.Environ().
func DefaultStateDir(environ []string) (string, error) {
	env := envMap(environ)
	if su := env["SUDO_USER"]; su != "" && su != "root" {
		u, err := user.Lookup(su)
		if err != nil {
			return "", fmt.Errorf("state_dir: looking up SUDO_USER %q: %w; set state_dir explicitly, e.g. /home/%s/.clauderon", su, err, su)
		}
		return filepath.Join(u.HomeDir, ".clauderon"), nil
	}
	if h := env["HOME"]; h != "" {
		return filepath.Join(h, ".clauderon"), nil
	}
	u, err := user.Current()
	if err != nil || u.HomeDir == "" {
		return "", fmt.Errorf("state_dir: no HOME and no home directory for the current user (%v); set state_dir, e.g. /root/.clauderon", err)
	}
	return filepath.Join(u.HomeDir, ".clauderon"), nil
}

func envMap(environ []string) map[string]string {
	if environ == nil {
		environ = os.Environ()
	}
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok {
			m[k] = val
		}
	}
	return m
}

// leaf is one viper key with its default value.
type leaf struct {
	key string
	def any
}

// leaves lists the viper keys of v's fields with their values: structs of this
// package are walked, anything else (scalars, lists) is a leaf.
func leaves(v reflect.Value, prefix string) []leaf {
	var out []leaf
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			out = append(out, leaves(v.Field(i), key+".")...)
			continue
		}
		out = append(out, leaf{key: key, def: v.Field(i).Interface()})
	}
	return out
}

// Keys lists every configuration key (viper's dotted form), sorted.
func Keys() []string {
	var keys []string
	for _, l := range leaves(reflect.ValueOf(*Default()), "") {
		keys = append(keys, l.key)
	}
	sort.Strings(keys)
	return keys
}

// registerDefaults gives viper every key (AutomaticEnv only sees known keys)
// with the value from Default(), and binds its environment variable.
func registerDefaults(v *viper.Viper) ([]string, error) {
	var keys []string
	for _, l := range leaves(reflect.ValueOf(*Default()), "") {
		v.SetDefault(l.key, l.def)
		if err := v.BindEnv(l.key); err != nil {
			return nil, fmt.Errorf("binding env for %s: %w", l.key, err)
		}
		keys = append(keys, l.key)
	}
	return keys, nil
}

func readFile(v *viper.Viper, file string, env map[string]string) error {
	explicit := file != ""
	if !explicit {
		file = env["CLAUDERON_CONFIG"]
		explicit = file != ""
	}
	if !explicit {
		if _, err := os.Stat(systemFileForTest); err != nil {
			return nil
		}
		file = systemFileForTest
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("parsing config file %s: %w", file, err)
	}
	return nil
}

func bindFlags(v *viper.Viper, fs *pflag.FlagSet, keys []string) error {
	if fs == nil {
		return nil
	}
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[k] = true
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		key := strings.ReplaceAll(f.Name, "-", "_")
		if known[key] && err == nil {
			err = v.BindPFlag(key, f)
		}
	})
	if err != nil {
		return fmt.Errorf("binding flags: %w", err)
	}
	return nil
}

// checkUnknownKeys names keys that no field decodes, with a suggestion, before
// UnmarshalExact (which also catches unknown keys inside list items).
func checkUnknownKeys(have, known []string) error {
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	var errs []error
	sort.Strings(have)
	for _, k := range have {
		if isKnown[k] {
			continue
		}
		if leaf := leafPrefix(k, known); leaf != "" {
			errs = append(errs, fmt.Errorf("%s: expected a list or a value, not a mapping (found key %q)", leaf, k))
			continue
		}
		msg := fmt.Sprintf("%s: unknown config key", k)
		if s := closest(k, known); s != "" {
			msg += fmt.Sprintf("; did you mean %s?", s)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

func leafPrefix(k string, known []string) string {
	for _, l := range known {
		if strings.HasPrefix(k, l+".") {
			return l
		}
	}
	return ""
}

func closest(k string, known []string) string {
	best, bestD := "", 4
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var invalidKeysRE = regexp.MustCompile(`'([^']*)' has invalid keys: ([^\n]+)`)

// decodeError rewrites mapstructure's "'rules[0]' has invalid keys: hdr" into
// "rules[0].hdr: unknown config key", keeping other decode errors as they are.
func decodeError(err error) error {
	msg := err.Error()
	ms := invalidKeysRE.FindAllStringSubmatch(msg, -1)
	if len(ms) == 0 {
		return fmt.Errorf("decoding config: %w", err)
	}
	var errs []error
	for _, m := range ms {
		for _, k := range strings.Split(m[2], ", ") {
			key := k
			if m[1] != "" {
				key = m[1] + "." + k
			}
			errs = append(errs, fmt.Errorf("%s: unknown config key", key))
		}
	}
	return errors.Join(errs...)
}

// decodeHook turns environment strings into lists: "a,b" or a YAML/JSON list
// for []string, a YAML/JSON list for lists of structs (CLAUDERON_RULES,
// CLAUDERON_UPSTREAMS, CLAUDERON_EGRESS_ALLOW_CIDRS), and "10s" into durations.
func decodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		stringToList,
	)
}

func stringToList(from, to reflect.Type, data any) (any, error) {
	if to.Kind() == reflect.Slice && from.Kind() == reflect.Map {
		return nil, errors.New("expected a list, not a mapping (write it as a YAML list: - item)")
	}
	s, ok := data.(string)
	if !ok || from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return []any{}, nil
	}
	if strings.HasPrefix(s, "[") || to.Elem().Kind() == reflect.Struct {
		var out []any
		if err := yaml.Unmarshal([]byte(s), &out); err != nil {
			return nil, fmt.Errorf("expected a YAML/JSON list, e.g. [{host: api.example.com, credential: example}]: %w", err)
		}
		return out, nil
	}
	var out []any
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}
