// Command fakeupstream stands in for api.anthropic.com in the offline demo
// (scripts/demo.sh): it serves the fake Anthropic Messages API from
// scripts/fakeapi over TLS with its own throwaway CA, answering only the
// real (demo) token, and logs one JSON line per request — never a
// credential. It is not part of the product and never dials out.
//
//	FAKE_UPSTREAM_TOKEN=sk-ant-oat01-DEMO-... fakeupstream -listen 127.0.0.1:0 \
//	    -ca-file /tmp/x/upstream-ca.pem -addr-file /tmp/x/upstream.addr
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
}

func run() error {
	hosts := flag.String("hosts", "api.anthropic.com", "comma-separated names in the server certificate")
	caFile := flag.String("ca-file", "", "write the CA certificate here (required)")
	addrFile := flag.String("addr-file", "", "write the listening address here")
	flag.Parse()
	token := os.Getenv("FAKE_UPSTREAM_TOKEN")
	if token == "" || *caFile == "" {
		return fmt.Errorf("need FAKE_UPSTREAM_TOKEN in the environment and -ca-file")
	}
	ca, err := fakeapi.NewCA("clauderon demo fake upstream CA")
	if err != nil {
		return err
	}
	if err := ca.WriteFile(*caFile); err != nil {
		return err
	}
	cfg, err := ca.ServerTLS(false, strings.Split(*hosts, ",")...)
	if err != nil {
		return err
	}
	// One JSON line per request: what arrived and how it authenticated,
	// never the credential itself.
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	log := &fakeapi.Log{OnAdd: func(r fakeapi.Request) {
		mu.Lock()
		defer mu.Unlock()
		r.Time = r.Time.UTC().Truncate(time.Millisecond)
		_ = enc.Encode(r)
	}}
	srv, err := fakeapi.Serve(&fakeapi.Anthropic{OAuthToken: token, Log: log}, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(srv.Addr), 0o644); err != nil {
			return fmt.Errorf("writing address file: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "fakeupstream: serving %s on %s\n", *hosts, srv.Addr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}
