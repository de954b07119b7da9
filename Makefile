# mcpguard — `make run` serves with an embedded dev identity provider;
# `make test` runs every test (unit, policy, end to end with real clients).
GO       ?= go
BIN      ?= bin/mcpguard
PKGS     := ./...
export GOFLAGS := -buildvcs=false

.PHONY: run build deps test test-go test-fuzz test-policy test-e2e test-keycloak bench lint fmt docker tools-ts clean

run: ## serve on 127.0.0.1:8000 with the dev identity provider, static roles, no cloud account
	ENVIRONMENT=development DEV_IDP=true OAUTH_PROXY=true HOST=127.0.0.1 PORT=8000 LOG_FORMAT=text $(GO) run ./cmd/mcpguard serve

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN) ./cmd/mcpguard

test: deps lint test-policy test-go test-fuzz test-e2e test-keycloak mutate-go-ci ## everything CI runs

# System packages the tests run for real: Debian's redis-server, unzip
# for the Keycloak distribution (fetched from Maven Central by test/keycloak/fetch.sh),
# chromium, the browser that approves the OAuth proxy's consent page, and
# nginx, the reverse proxy in front of three replicas (test/replicas_nginx_test.go).
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v unzip >/dev/null || missing="$$missing unzip"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

test-go:
	MCPGUARD_REDIS=1 MCPGUARD_CHROMIUM=1 MCPGUARD_NGINX=1 MCPGUARD_LOADTEST=1 $(GO) test -race -count=1 $(PKGS)

# Fuzz the two parsers at the trust boundary for a bounded time each: the
# bearer token (only the issuer's signed claims get through) and the tool
# arguments (the policy reads what the SDK will decode). Seeds are in the
# tests and in testdata/fuzz.
FUZZTIME ?= 20s
test-fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./internal/authn/
	$(GO) test -run '^$$' -fuzz '^FuzzArguments$$' -fuzztime $(FUZZTIME) ./internal/policy/

# The policy tests, loaded and evaluated as the server does (strict compile,
# strict builtin errors: mcpguard policy test), then on stock OPA as a team's
# CI would run them; coverage checked per policy file, test files left out
# (opa test's --threshold averages them in); the lint; then the mutation
# check of the tests (docs/TESTING.md).
POLICY_COVERAGE ?= 100
test-policy:
	$(GO) run ./cmd/mcpguard policy test --policy-dir policies
	$(GO) tool opa test --fail-on-empty policies/
	@mkdir -p bin
	$(GO) tool opa test policies/ --coverage --format=json > bin/policy-coverage.json
	$(GO) run ./test/coverage/rego -min $(POLICY_COVERAGE) -report bin/policy-coverage.json policies/
	$(GO) run ./cmd/mcpguard policy lint --realm-export test/keycloak/realm.json --roles-file test/fixtures/roles.json
	@$(MAKE) --no-print-directory mutate-rego

# Rego mutation testing: every conjunct of policies/*.rego deleted, every
# expression negated, every body dropped, one at a time; each mutant must fail
# a policy test or be listed, with its reason, in test/mutate/rego-allow.txt.
# About 80 s of CPU on one core; it gives up (and fails) after 6 minutes.
.PHONY: mutate-rego
mutate-rego:
	$(GO) run ./test/mutate/rego -dir policies -allow test/mutate/rego-allow.txt -timeout 6m

# Go mutation testing with gremlins (pinned by test/mutate/gremlins/go.mod, a
# module of its own) over the security-critical code, one target at a time
# with one worker: every surviving mutant must fail a test or be listed, with
# its reason, in test/mutate/go-allow.txt. MUTATE_ONLY=a,b picks targets
# (`go -C test/mutate/gremlins run . -list`); MUTATE_BUDGET=10m stops each
# target after that long and judges what it ran. Times: docs/TESTING.md.
MUTATE_ONLY ?=
MUTATE_BUDGET ?= 0
.PHONY: mutate mutate-go
mutate-go:
	$(GO) -C test/mutate/gremlins run . -repo $(CURDIR) -go $(GO) -only '$(MUTATE_ONLY)' -budget $(MUTATE_BUDGET)

mutate: mutate-go mutate-rego

# What CI runs of it (the last step of make test): the targets that guard
# every request (the token, the sealing, the authorization middleware), each
# stopped at 12 minutes at worst; about 17 minutes measured on the 2-core
# machine. A survivor that is neither killed nor listed in
# test/mutate/go-allow.txt fails the run. The Keycloak exchange and the
# policy engine run with make mutate.
MUTATE_CI ?= store-sealing,authn-jws,authn-verifier,authn-keys,server-authz
.PHONY: mutate-go-ci
mutate-go-ci:
	$(GO) -C test/mutate/gremlins run . -repo $(CURDIR) -go $(GO) -only '$(MUTATE_CI)' -budget 12m

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
	$(GO) -C test/mutate/gremlins vet ./...
	$(GO) tool opa fmt --list --fail policies/
	$(GO) tool opa check --strict policies/

fmt:
	gofmt -w cmd internal tools test
	$(GO) tool opa fmt -w policies/

# Every figure in docs/PERFORMANCE.md comes from one of these lines; the
# header says when, where and at which commit they were produced.
bench: deps ## the figures in docs/PERFORMANCE.md (about 12 minutes)
	@echo "# make bench, $$(date -u +%FT%TZ), commit $$(git rev-parse --short HEAD 2>/dev/null), $$($(GO) env GOVERSION), $$(nproc) cores"
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3s -count 3 ./internal/policy/
	$(GO) test -run '^$$' -bench VerifyCached -benchmem -count 3 ./internal/authn/
	$(GO) test -run '^$$' -bench KeycloakCacheHit -benchmem -benchtime 2s -count 3 ./internal/exchange/
	$(GO) test -run '^$$' -bench 'ToolsCall' -benchtime 40x -count 2 ./test/
	$(GO) test -run '^$$' -bench 'ToolsList' -benchtime 6x -count 2 ./test/
	$(GO) test -run '^$$' -bench 'Handler' -benchmem -benchtime 3s -count 2 ./test/

# A signed OPA bundle of policies/ (tests included: a replica runs them before
# it activates the bundle), for OPA_CONFIG or POLICY_BUNDLE_URL. The private
# key is a PEM file (docs/POLICIES.md: openssl genpkey); the servers hold the
# public half (POLICY_BUNDLE_PUBLIC_KEY). The revision names the policy in
# decision logs and on /metrics.
BUNDLE             ?= bin/bundle.tar.gz
BUNDLE_SIGNING_KEY ?= bundle-signing.key.pem
BUNDLE_SIGNING_ALG ?= RS256
BUNDLE_REVISION    ?= $(shell git describe --always --dirty 2>/dev/null || date -u +%Y%m%dT%H%M%SZ)
.PHONY: bundle
bundle:
	@test -f '$(BUNDLE_SIGNING_KEY)' || { echo "no signing key $(BUNDLE_SIGNING_KEY) (BUNDLE_SIGNING_KEY=file): see docs/POLICIES.md"; exit 2; }
	$(GO) run ./cmd/mcpguard policy test --policy-dir policies
	@mkdir -p $(dir $(BUNDLE))
	$(GO) tool opa build --bundle policies/ --signing-key '$(BUNDLE_SIGNING_KEY)' --signing-alg $(BUNDLE_SIGNING_ALG) \
		--revision '$(BUNDLE_REVISION)' -o $(BUNDLE)
	@echo "$(BUNDLE): revision $(BUNDLE_REVISION), signed with $(BUNDLE_SIGNING_KEY) ($(BUNDLE_SIGNING_ALG))"

# The out-of-process load harness (docs/PERFORMANCE.md, "Out of process"):
# mcpguard and the bare Go SDK, each its own process, driven by a third;
# interleaved rounds, stateful and stateless. Not part of make test. Flags:
# make loadtest LOADTEST_FLAGS='-rounds 10 -duration 10s -clients 4'
# make loadtest LOADTEST_FLAGS='-method tools/list'   (1,000 tools, the caller shown 50)
# (go run ./test/load -h lists them).
LOADTEST_FLAGS ?=
.PHONY: loadtest
loadtest:
	$(GO) run ./test/load -go $(GO) $(LOADTEST_FLAGS)

docker:
	docker build --target production -t mcpguard:latest .

clean:
	rm -rf bin test/node_modules
