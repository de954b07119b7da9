package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// Readiness: /readyz answers 200 when this replica can decide requests — a
// policy is in force, the token issuer's signing keys are at hand, and
// Keycloak and Redis answer when they are configured — and 503 otherwise,
// with a JSON body naming each check. /healthz says only that the process
// answers: a liveness probe must not restart a replica because Keycloak is
// down.
//
// The body never carries a dependency's own words (an error may name a host
// or a user): each failed check gets a fixed sentence, and the error itself
// goes to the log when the check starts failing.

const (
	// readyTimeout bounds one round of checks (they run in parallel);
	// Kubernetes probes should allow a little more (timeoutSeconds: 5).
	readyTimeout = 3 * time.Second
	// readyReuse is how long a round's answer is reused: /readyz needs no
	// token, and a flood of it must not become a flood on Keycloak or Redis.
	readyReuse = time.Second
)

// Check states in the /readyz body.
const (
	checkOK            = "ok"
	checkFailed        = "failed"
	checkNotConfigured = "not configured"
)

// readyCheck is one dependency: run returns nil when it answers. A nil run
// is a dependency this configuration does not use.
type readyCheck struct {
	name string
	// failure is what the body says when run fails.
	failure string
	run     func(context.Context) error
}

// checkResult is one check in the /readyz body.
type checkResult struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// The policy check's facts (policy.Status).
	Revision       string     `json:"revision,omitempty"`
	Source         string     `json:"source,omitempty"`
	Loaded         *time.Time `json:"loaded,omitempty"`
	ChangesRefused uint64     `json:"changes_refused,omitempty"`
	LastChange     string     `json:"last_change_error,omitempty"`
}

// readyReport is the /readyz body.
type readyReport struct {
	Status string                 `json:"status"`
	Checks map[string]checkResult `json:"checks"`
}

// readiness runs the checks, at most once per readyReuse, and logs each
// check's changes of state.
type readiness struct {
	engine *policy.Engine
	checks []readyCheck
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	at      time.Time
	results map[string]checkResult
	errs    map[string]error // the errors of the last round, for the log
	ready   bool
}

func newReadiness(engine *policy.Engine, checks []readyCheck, logger *slog.Logger) *readiness {
	return &readiness{engine: engine, checks: checks, logger: logger, now: time.Now, errs: map[string]error{}}
}

// check answers whether the replica is ready, and each check's result: the
// last round's, if it is recent, else a new round's.
func (rd *readiness) check(ctx context.Context) (bool, map[string]checkResult, policy.Status) {
	st := rd.engine.Status()
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.results == nil || rd.now().Sub(rd.at) >= readyReuse {
		rd.round(ctx)
	}
	// The policy's state is read on every call: it costs one atomic load.
	ready := rd.ready && st.Ready
	return ready, rd.results, st
}

// round runs every configured check in parallel, bounded by readyTimeout.
// A probe that gives up does not cut the round short: others wait for it.
func (rd *readiness) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	errs := make([]error, len(rd.checks))
	var wg sync.WaitGroup
	for i, c := range rd.checks {
		if c.run == nil {
			continue
		}
		wg.Go(func() { errs[i] = c.run(ctx) })
	}
	wg.Wait()
	results := make(map[string]checkResult, len(rd.checks))
	ready := true
	for i, c := range rd.checks {
		prev, wasFailing := rd.errs[c.name]
		switch {
		case c.run == nil:
			results[c.name] = checkResult{Status: checkNotConfigured}
		case errs[i] != nil:
			ready = false
			results[c.name] = checkResult{Status: checkFailed, Error: c.failure}
			rd.errs[c.name] = errs[i]
			if !wasFailing || prev.Error() != errs[i].Error() {
				rd.logger.Warn("readiness check failed", "check", c.name, "error", errs[i])
			}
		default:
			results[c.name] = checkResult{Status: checkOK}
			delete(rd.errs, c.name)
			if wasFailing {
				rd.logger.Info("readiness check passes again", "check", c.name)
			}
		}
	}
	rd.results, rd.ready, rd.at = results, ready, rd.now()
}

// handler serves /readyz. detail adds why the last policy change was
// refused (file:line and the compiler's words): on the metrics listener,
// which is private, not on the MCP one, where it would show a prober the
// policy's rules.
func (rd *readiness) handler(detail bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ready, results, st := rd.check(r.Context())
		report := readyReport{Status: "ready", Checks: make(map[string]checkResult, len(results)+1)}
		for name, res := range results {
			report.Checks[name] = res
		}
		pc := checkResult{Status: checkOK, Revision: st.Revision, Source: st.Source, ChangesRefused: st.Failures}
		if !st.Loaded.IsZero() {
			loaded := st.Loaded.UTC()
			pc.Loaded = &loaded
		}
		if !st.Ready {
			pc.Status, pc.Error = checkFailed, "no policy is in force"
		}
		if st.LastError != nil {
			pc.LastChange = "the last policy change was refused; the policy in force is the last good one (details on the metrics listener and in the log)"
			if detail {
				pc.LastChange = st.LastError.Error()
			}
		}
		report.Checks["policy"] = pc
		status := http.StatusOK
		if !ready {
			report.Status, status = "not ready", http.StatusServiceUnavailable
		}
		b, err := json.Marshal(report)
		if err != nil {
			http.Error(w, "readiness report", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = w.Write(append(b, '\n'))
	})
}

// serveHealth answers /healthz: the process is alive and serving HTTP.
func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// readinessChecks are this configuration's dependencies, in the order the
// documentation lists them. The policy is checked apart (readiness.check).
func (s *Server) readinessChecks() []readyCheck {
	checks := []readyCheck{
		{name: "jwks", failure: "the token issuer's signing keys could not be fetched"},
		{name: "keycloak", failure: "Keycloak did not answer"},
		{name: "redis", failure: "Redis did not answer"},
	}
	if s.verifier != nil {
		checks[0].run = s.verifier.KeysReady
	}
	if kc, ok := s.roles.(keycloakChecker); ok {
		checks[1].run = kc.Check
	}
	if s.redisPing != nil {
		checks[2].run = s.redisPing.Ping
	}
	return checks
}

// keycloakChecker is the Keycloak role source as readiness sees it.
type keycloakChecker interface {
	Check(ctx context.Context) error
}
