# mcpguard — `make run` serves with an embedded dev identity provider;
# `make test` runs every test (unit, policy, end to end with real clients).
GO       ?= go
BIN      ?= bin/mcpguard
PKGS     := ./...
export GOFLAGS := -buildvcs=false

.PHONY: run build deps test test-go test-fuzz test-policy test-e2e test-keycloak bench lint fmt docker tools-ts clean

run: ## serve on 127.0.0.1:8000 with the dev identity provider, static roles, no cloud account
	ENVIRONMENT=development DEV_IDP=true HOST=127.0.0.1 PORT=8000 LOG_FORMAT=text $(GO) run ./cmd/mcpguard serve

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN) ./cmd/mcpguard

test: deps lint test-policy test-go test-fuzz test-e2e test-keycloak ## everything CI runs

# System packages the tests run for real: Debian's redis-server, and unzip
# for the Keycloak distribution (fetched from Maven Central by test/keycloak/fetch.sh).
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v unzip >/dev/null || missing="$$missing unzip"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

test-go:
	MCPGUARD_REDIS=1 $(GO) test -race -count=1 $(PKGS)

# Fuzz the two parsers at the trust boundary for a bounded time each: the
# bearer token (only the issuer's signed claims get through) and the tool
# arguments (the policy reads what the SDK will decode). Seeds are in the
# tests and in testdata/fuzz.
FUZZTIME ?= 20s
test-fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./internal/authn/
	$(GO) test -run '^$$' -fuzz '^FuzzArguments$$' -fuzztime $(FUZZTIME) ./internal/policy/

test-policy:
	$(GO) tool opa test policies/ -v --coverage --threshold 90 --format=json > /dev/null
	$(GO) tool opa test policies/
	$(GO) run ./cmd/mcpguard policy lint

test-e2e: tools-ts
	MCPGUARD_E2E_TS=1 $(GO) test -count=1 -v -run 'TestTypeScript' ./test/...

# The real Keycloak (and Redis) integration tests; Keycloak is started and
# stopped by the tests themselves.
test-keycloak: tools-ts
	MCPGUARD_KEYCLOAK=1 MCPGUARD_REDIS=1 MCPGUARD_E2E_TS=1 $(GO) test -count=1 -v -timeout 20m -run 'TestKeycloak|TestTypeScriptKeycloak' ./test/

tools-ts: test/node_modules/.package-lock.json

test/node_modules/.package-lock.json: test/package.json test/package-lock.json
	cd test && npm ci --no-audit --no-fund

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . && echo "gofmt: files above need formatting" && exit 1)
	$(GO) vet $(PKGS)
	$(GO) tool opa fmt --list --fail policies/
	$(GO) tool opa check --strict policies/

fmt:
	gofmt -w cmd internal tools test
	$(GO) tool opa fmt -w policies/

bench: ## the figures in docs/PERFORMANCE.md
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3s -count 3 ./internal/policy/
	$(GO) test -run '^$$' -bench VerifyCached -benchmem ./internal/authn/
	$(GO) test -run '^$$' -bench 'ToolsCall' -benchtime 40x -count 2 ./test/
	$(GO) test -run '^$$' -bench 'ToolsList' -benchtime 6x ./test/
	$(GO) test -run '^$$' -bench 'Handler' -benchmem -benchtime 3s ./test/

docker:
	docker build --target production -t mcpguard:latest .

clean:
	rm -rf bin test/node_modules
