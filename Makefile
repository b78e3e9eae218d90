# clauderond — see README.md. All targets run from the repo root.
GO      ?= go
BIN     := bin
PKGS    := ./...

.PHONY: build test test-unit test-root e2e lint bench demo fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/clauderond ./cmd/clauderon

# The README's test command: everything (installs packages, starts dockerd).
test:
	bash scripts/test.sh

test-unit:
	$(GO) test -race -count=1 $(PKGS)

e2e: build
	bash scripts/test.sh e2e

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt needed" && exit 1)
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./scripts/...

bench:
	bash scripts/bench.sh

fuzz:
	bash scripts/fuzz.sh

demo:
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
