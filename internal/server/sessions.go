package server

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// CodeTooManySessions is the JSON-RPC error code of a request refused because
// its user already holds MAX_SESSIONS_PER_USER sessions or
// MAX_STREAMS_PER_USER streams (HTTP 429), next to -32030 and -32031.
const CodeTooManySessions = -32032

// userLimit counts what each user holds (sessions, streams) against a cap.
type userLimit struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newUserLimit(max int) *userLimit {
	return &userLimit{max: max, n: map[string]int{}}
}

// acquire takes one of user's slots, or reports that none is free.
func (l *userLimit) acquire(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[user] >= l.max {
		return false
	}
	l.n[user]++
	return true
}

// release gives back a slot that acquire took.
func (l *userLimit) release(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[user] <= 1 {
		delete(l.n, user) // no entry kept for users who hold nothing
		return
	}
	l.n[user]--
}

// held is how many slots user holds.
func (l *userLimit) held(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[user]
}

// userOf is the user an authenticated request belongs to (tenant/object id),
// "" for every caller when authentication is off.
func userOf(r *http.Request) string {
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
		return ti.UserID
	}
	return ""
}

// tooMany refuses a request over a per-user cap. HTTP 429 rather than a
// JSON-RPC error from initialize: the refusal comes before the SDK allocates a
// session, it is a quota and not a policy decision, and the status is what
// proxies, load balancers and client retry logic understand. The body is a
// JSON-RPC error for clients that read it.
func tooMany(w http.ResponseWriter, what, variable string, max int) {
	writeJSONRPCError(w, http.StatusTooManyRequests, CodeTooManySessions,
		fmt.Sprintf("too many open %s for this user (%s=%d): close one or let an idle one expire", what, variable, max))
}

// limitSessions caps, per user, the live Streamable HTTP sessions and the
// open GET streams of h (the SDK's stateful handler). The SDK offers no hook
// when it creates or ends a session, so a POST without Mcp-Session-Id (the
// only request that creates one) holds a slot while it runs; when the answer
// names a session that is still live, the slot stays with that session until
// it closes (DELETE, SESSION_IDLE_TIMEOUT, shutdown).
func (s *Server) limitSessions(h http.Handler) http.Handler {
	if s.cfg.Stateless {
		return h // no sessions, no GET streams
	}
	sessions := newUserLimit(s.cfg.Sessions.MaxPerUser)
	streams := newUserLimit(s.cfg.Sessions.MaxStreamsPerUser)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := userOf(r)
		switch {
		case r.Method == http.MethodGet:
			if !streams.acquire(user) {
				s.logger.Info("stream refused: per-user cap", "user", user, "max", streams.max)
				tooMany(w, "streams", "MAX_STREAMS_PER_USER", streams.max)
				return
			}
			defer streams.release(user)
		case r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") == "":
			if !sessions.acquire(user) {
				s.logger.Info("session refused: per-user cap", "user", user, "max", sessions.max)
				tooMany(w, "sessions", "MAX_SESSIONS_PER_USER", sessions.max)
				return
			}
			h.ServeHTTP(w, r)
			if ss := s.liveSession(w.Header().Get("Mcp-Session-Id")); ss != nil {
				go func() {
					_ = ss.Wait()
					sessions.release(user)
				}()
				return
			}
			sessions.release(user)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// liveSession is the server's open session with this id, or nil.
func (s *Server) liveSession(id string) *mcp.ServerSession {
	if id == "" {
		return nil
	}
	for ss := range s.mcp.Sessions() {
		if ss.ID() == id {
			return ss
		}
	}
	return nil
}
