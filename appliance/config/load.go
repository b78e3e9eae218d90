package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"

	"github.com/clauderon/clauderond/appliance/envvars"
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
	// Each key's variable is bound (registerDefaults), not AutomaticEnv:
	// with it, a variable named after a section (CLAUDERON_SOCKET, the
	// CLI's) would shadow every key of that section.
	v.AllowEmptyEnv(true)
	if err := readFile(v, opts.File, env); err != nil {
		return nil, err
	}
	if err := bindFlags(v, opts.Flags, keys); err != nil {
		return nil, err
	}
	cfg := &Config{}
	err = v.UnmarshalExact(cfg, viper.DecodeHook(decodeHook()))
	problems := decodeErrors(err, keys, cfg.NodeMode()) // the mode, if it decoded, picks network.subnet's advice
	problems = append(problems, emptyUnknownKeys(v, keys)...)
	if cfg.StateDir == "" {
		dir, err := DefaultStateDir(opts.Env)
		if err != nil {
			return nil, errors.Join(append(problems, err)...)
		}
		cfg.StateDir = dir
	}
	if len(problems) > 0 {
		// Report the other keys' problems too, but not what follows from
		// a value that did not decode (a zero value in its place).
		return nil, errors.Join(append(problems, validationBesides(cfg.Validate(), problems)...)...)
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

// envMap is environ by name; nil means the process environment.
func envMap(environ []string) map[string]string {
	if environ == nil {
		environ = os.Environ()
	}
	return envvars.Map(environ)
}

// Keys lists every configuration key (viper's dotted form), sorted.
func Keys() []string {
	keys, _ := registerDefaults(viper.New())
	return keys
}

// registerDefaults gives viper Default() as nested maps (the YAML that
// Redacted prints, read back), binds each key's CLAUDERON_<KEY> variable and
// returns the keys, sorted.
func registerDefaults(v *viper.Viper) ([]string, error) {
	text, err := Default().render()
	var m map[string]any
	if err == nil {
		err = yaml.Unmarshal(text, &m)
	}
	if err != nil {
		return nil, fmt.Errorf("rendering the default configuration: %w", err)
	}
	for k, val := range m {
		v.SetDefault(k, val)
	}
	keys := v.AllKeys()
	for _, k := range keys {
		if err := v.BindEnv(k); err != nil {
			return nil, fmt.Errorf("binding env for %s: %w", k, err)
		}
	}
	sort.Strings(keys)
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
