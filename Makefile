# dnms — make help lists the targets.
SHELL := bash
.SHELLFLAGS := -o pipefail -euc
.DEFAULT_GOAL := help

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
export PATH := $(dir $(GO)):$(PATH)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install (as root) or name the Debian packages the tests and demo need
	scripts/deps.sh test

.PHONY: build
build: ## build bin/dnms (static, no cgo: dnms drops capabilities from every thread)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/dnms ./cmd/dnms

.PHONY: package
package: ## build dist/dnms_<version>_<arch>.deb (binary, systemd unit, example config, /etc/default/dnms)
	GO=$(GO) scripts/package.sh dist

.PHONY: generate
generate: ## regenerate the eBPF objects with bpf2go (needs clang)
	scripts/deps.sh generate
	$(GO) generate ./internal/loader/...

.PHONY: test
test: deps ## run every test (root-only lab and eBPF tests run when root)
	scripts/test.sh

.PHONY: bench
bench: ## print the benchmark tables (probe, eBPF, localization, mapper)
	scripts/deps.sh bench
	scripts/bench.sh

.PHONY: demo
demo: build ## build a lab fabric, run dnms on every host, break a link, show the ranking
	scripts/deps.sh demo
	scripts/demo.sh

.PHONY: lint
lint: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: clean
clean: ## remove build output (lab fabrics: scripts/lab.sh list, then down -prefix P)
	rm -rf bin dist
