package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// BenchmarkProtect measures the HTTP middleware in front of the MCP handler
// (limitBody, authenticate with a verified token from the cache, the SDK's
// RequireBearerToken, stripCredentials) on its own: the per-request cost
// that the bare SDK does not pay, before any MCP decoding. "connections"
// is how many client addresses share one token, taking turns, as the load
// harness's clients do.
func BenchmarkProtect(b *testing.B) {
	p := newProtected(b, nil)
	tok := p.token(b, "bench")
	var missing int
	h := p.s.protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ti := auth.TokenInfoFromContext(r.Context()); ti == nil || r.Header.Get("Authorization") != "" {
			missing++
		}
	}))
	for _, conns := range []int{1, 4} {
		reqs := make([]*http.Request, conns)
		for i := range reqs {
			r := httptest.NewRequest(http.MethodPost, "/mcp", http.NoBody)
			r.RemoteAddr = fmt.Sprintf("127.0.0.1:%d", 40000+i)
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			r.Header.Set("Authorization", "Bearer "+tok)
			reqs[i] = r
		}
		b.Run(fmt.Sprintf("connections-%d", conns), func(b *testing.B) {
			b.ReportAllocs()
			w := httptest.NewRecorder()
			i := 0
			for b.Loop() {
				h.ServeHTTP(w, reqs[i%conns])
				i++
			}
			if w.Code != http.StatusOK || missing > 0 {
				b.Fatalf("status %d, %d requests without the caller or with the token", w.Code, missing)
			}
		})
	}
}
