package policy

import (
	"sync"
	"sync/atomic"
	"time"
)

// Status is the state of the policy in force, for readiness and metrics.
// Reading it costs one atomic load: it is a snapshot, never updated in place.
type Status struct {
	// Ready is true once a policy is in force. A refused change leaves it
	// true: the last good policy keeps deciding.
	Ready bool
	// Source says where the policy comes from: "dir" (POLICY_DIR) or
	// "bundle" (OPA's bundle plugin).
	Source string
	// Revision names the policy in force: the bundles' manifest revisions,
	// or for a folder a digest of its files ("sha256:…").
	Revision string
	// Loaded is when the policy in force was swapped in.
	Loaded time.Time
	// LastError is why the last change was refused (file:line where the
	// compiler or a test gives one); nil once a later change succeeds.
	LastError error
	// Reloads counts the policies swapped in, the first included.
	Reloads uint64
	// Failures counts the changes refused: folder reloads, and bundle
	// activations that did not compile, failed their tests, or were
	// refused by OPA (a bad signature, a download that failed).
	Failures uint64
	// LogsDropped counts decision-log events dropped because the queue to
	// OPA's decision-log plugin was full.
	LogsDropped uint64
}

// status keeps the Engine's Status and tells the listeners of each change.
type status struct {
	cur       atomic.Pointer[Status]
	dropped   atomic.Uint64
	mu        sync.Mutex // serialises changes and listener calls
	listeners []func(Status)
}

func (s *status) load(source string) Status {
	if p := s.cur.Load(); p != nil {
		st := *p
		st.LogsDropped = s.dropped.Load()
		return st
	}
	return Status{Source: source, LogsDropped: s.dropped.Load()}
}

// update applies f to a copy of the status, publishes it and tells the
// listeners, in the order of the changes.
func (s *status) update(source string, f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Source: source}
	if p := s.cur.Load(); p != nil {
		st = *p
	}
	f(&st)
	s.cur.Store(&st)
	st.LogsDropped = s.dropped.Load()
	for _, l := range s.listeners {
		l(st)
	}
}

func (s *status) listen(f func(Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, f)
}

// Revision names the policy in force ("" before any).
func (e *Engine) Revision() string {
	if c := e.current.Load(); c != nil {
		return c.revision
	}
	return ""
}

// Generation counts the policies swapped in (0 before any): a cache of what
// a policy decided keys on it, since two policies never share one (two
// bundles may share a revision).
func (e *Engine) Generation() uint64 {
	if c := e.current.Load(); c != nil {
		return c.generation
	}
	return 0
}

// Status returns the state of the policy in force.
func (e *Engine) Status() Status { return e.status.load(e.source()) }

// OnStatus calls f after every change of Status: a policy swapped in or a
// change refused. f runs on the goroutine that made the change and must not
// block; metrics count reloads and failures with it.
func (e *Engine) OnStatus(f func(Status)) { e.status.listen(f) }
