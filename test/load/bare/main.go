// Command bare is the load harness's baseline (make loadtest): the Go MCP SDK
// alone, serving read_critical_data with mcpguard's own input and output types,
// in mcpguard's response mode, with no authentication and no policy. It is
// what an operator would run instead of mcpguard, so the harness divides
// mcpguard's figures by its own.
//
//	bare -addr 127.0.0.1:9000 -metrics-addr 127.0.0.1:9001 [-stateless] [-tools N]
//
// With -tools N it serves N echo tools instead, those mcpguard serves in the
// harness's tools/list mode (test/load/guardlist).
//
// It serves /mcp and GET /healthz on -addr, and the Go runtime's Prometheus
// series (the collector mcpguard registers, so allocation counts compare) on
// -metrics-addr. It runs until killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpguard/mcpguard/internal/policy/policytest"
	"github.com/mcpguard/mcpguard/tools"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "host:port of the MCP endpoint (/mcp)")
	metricsAddr := fs.String("metrics-addr", "", "host:port of /metrics (none when empty)")
	stateless := fs.Bool("stateless", false, "serve as mcpguard does with STATELESS=true: no sessions, JSON responses")
	readBy := fs.String("read-by", "loadtest@dev.mcpguard.test", "the read_by of every answer: the display name mcpguard answers for the harness's caller, so both answers are the same size")
	nTools := fs.Int("tools", 0, "serve this many echo tools (policytest.RegisterEchoTools, the tools/list mode's) in place of read_critical_data")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if *nTools < 0 {
		return fmt.Errorf("-tools %d: want 0 or more", *nTools)
	}

	s := mcp.NewServer(&mcp.Implementation{Name: "bare", Version: "1"}, nil)
	if *nTools > 0 {
		// The guarded side's tools (test/load/guardlist registers the same).
		policytest.RegisterEchoTools(*nTools)(s)
	} else {
		// The description and annotations of tools.Register's tool: the same
		// tools/list entry, the same schemas (from the same Go types).
		mcp.AddTool(s, &mcp.Tool{
			Name:        "read_critical_data",
			Description: "Query the critical on-premise data store (policy: role data_reader).",
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)},
		}, readCriticalData(*readBy))
	}

	// The SDK options mcpguard sets (internal/server/http.go), at mcpguard's
	// defaults (MAX_REQUEST_BYTES, SESSION_IDLE_TIMEOUT): only what mcpguard
	// adds around the SDK should differ.
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{
		Stateless:           *stateless,
		JSONResponse:        *stateless,
		MaxRequestBodyBytes: 1 << 20,
		SessionTimeout:      30 * time.Minute,
	})
	mux := http.NewServeMux()
	mux.Handle("/mcp", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})

	errc := make(chan error, 2)
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector())
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// The CPU profile, as mcpguard serves it with PPROF=true: the
		// harness's -cpuprofile takes both servers' under the same load.
		mm.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		ms := &http.Server{Addr: *metricsAddr, Handler: mm, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- fmt.Errorf("metrics: %w", ms.ListenAndServe()) }()
	}
	hs := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	go func() { errc <- hs.ListenAndServe() }()
	err := <-errc
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// readCriticalData does what tools' read_critical_data does, with a fixed
// caller name in place of the authenticated caller's.
func readCriticalData(readBy string) mcp.ToolHandlerFor[tools.QueryInput, tools.QueryResult] {
	return func(_ context.Context, _ *mcp.CallToolRequest, in tools.QueryInput) (*mcp.CallToolResult, tools.QueryResult, error) {
		limit := in.Limit
		if limit <= 0 || limit > 100 {
			limit = 10
		}
		recs := make([]string, 0, 3)
		for i := 1; i <= 3 && i <= limit; i++ {
			recs = append(recs, fmt.Sprintf("record %d matching %q", i, in.Query))
		}
		return nil, tools.QueryResult{Query: in.Query, Records: recs, ReadBy: readBy, Timestamp: time.Now().UTC().Format(time.RFC3339)}, nil
	}
}
