package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpguard/mcpguard/internal/exchange"
)

// spanAttr reads one attribute of a finished span ("" when absent).
func spanAttr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// A span per MCP request, named by method (and registered tool), carrying
// the decision's id and result; a denial is an error span whose decision id
// is the one the caller was given.
func TestSpanPerRequest(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	o := newObserved(t, nil, Options{Tracer: tp})
	s := o.s
	ex := extra(t, s, user("oid-t1"))
	ctx := context.Background()
	handle := s.authorizer()((&recorder{}).handle)
	call := func(name string) error {
		_, err := handle(ctx, "tools/call", &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: name}})
		return err
	}
	if err := call("open"); err != nil {
		t.Fatal(err)
	}
	denied := call("closed")
	var je *jsonrpc.Error
	if !errors.As(denied, &je) {
		t.Fatalf("closed: %v", denied)
	}
	var data DenialData
	if err := json.Unmarshal(je.Data, &data); err != nil || data.DecisionID == "" {
		t.Fatalf("denial data %s: %v", je.Data, err)
	}
	_ = call("made-up-tool")
	// Roles that cannot be had: the request is refused before any decision.
	<-s.Linted() // the start-up lint reads the role source
	s.roles = &fakeRoles{err: exchange.ErrUnavailable}
	_, _ = handle(ctx, "tools/call", &mcp.CallToolRequest{Extra: extra(t, s, user("oid-t3")), Params: &mcp.CallToolParamsRaw{Name: "open"}})

	spans := rec.Ended()
	if len(spans) != 4 {
		t.Fatalf("%d spans for 4 requests", len(spans))
	}
	want := []struct {
		name, tool, result string
		status             codes.Code
	}{
		{"tools/call open", "open", "allow", codes.Unset},
		{"tools/call closed", "closed", "deny", codes.Error},
		{"tools/call", "", "allow", codes.Unset},
		{"tools/call open", "open", "error", codes.Error},
	}
	for i, w := range want {
		sp := spans[i]
		if sp.Name() != w.name || sp.SpanKind() != trace.SpanKindServer || spanAttr(sp, attrMethod) != "tools/call" ||
			spanAttr(sp, attrTool) != w.tool || spanAttr(sp, attrResult) != w.result || sp.Status().Code != w.status {
			t.Errorf("span %d: %s kind %v %v status %v; want %+v", i, sp.Name(), sp.SpanKind(), sp.Attributes(), sp.Status(), w)
		}
		if st := s.engine.Status(); spanAttr(sp, attrRevision) != st.Revision {
			t.Errorf("span %d: revision %q, policy %q", i, spanAttr(sp, attrRevision), st.Revision)
		}
	}
	for i := range 3 {
		if spanAttr(spans[i], attrDecisionID) == "" {
			t.Errorf("span %d has no decision id", i)
		}
	}
	if got := spanAttr(spans[1], attrDecisionID); got != data.DecisionID {
		t.Errorf("the denied span's decision id %q is not the caller's %q", got, data.DecisionID)
	}
	if spanAttr(spans[1], attrErrorCode) != "-32030" || spanAttr(spans[3], attrErrorCode) != "-32031" {
		t.Errorf("error codes: %v / %v", spans[1].Attributes(), spans[3].Attributes())
	}
	if strings.Contains(spans[2].Name(), "made-up") || spanAttr(spans[2], attrTool) != "" {
		t.Errorf("a made-up tool name named a span: %s %v", spans[2].Name(), spans[2].Attributes())
	}
}

// The caller's trace continues: a W3C traceparent header, or (any
// transport) the request's _meta.traceparent, is the span's parent.
func TestSpanContinuesTheCallersTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	o := newObserved(t, nil, Options{Tracer: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	tok := o.token(t, "alice")
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if body := o.call(t, tok, "open", map[string]string{"Traceparent": "00-" + traceID + "-" + parentID + "-01"}); !strings.Contains(body, `"result"`) {
		t.Fatalf("call: %s", body)
	}
	s := o.s
	const metaTrace = "0af7651916cd43dd8448eb211c80319c"
	params := &mcp.CallToolParamsRaw{Name: "open", Meta: mcp.Meta{"traceparent": "00-" + metaTrace + "-b7ad6b7169203331-01"}}
	if _, err := s.authorizer()((&recorder{}).handle)(context.Background(), "tools/call", &mcp.CallToolRequest{Extra: extra(t, s, user("oid-t4")), Params: params}); err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	if got := spans[0].Parent(); got.TraceID().String() != traceID || got.SpanID().String() != parentID || !got.IsRemote() ||
		spans[0].SpanContext().TraceID().String() != traceID {
		t.Errorf("header traceparent: parent %v, span %v", got, spans[0].SpanContext())
	}
	if spans[1].Parent().TraceID().String() != metaTrace {
		t.Errorf("_meta traceparent: parent %v", spans[1].Parent())
	}
}

// Without a tracer the middleware is exactly what it was: no wrapper, no
// span, nothing on the request path.
func TestTracingOffAddsNothing(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	if s.tracer != nil || s.traces != nil {
		t.Fatal("tracing on without OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	next := (&recorder{}).handle
	h := mcp.MethodHandler(next)
	if reflect.ValueOf(s.traced(h)).Pointer() != reflect.ValueOf(h).Pointer() {
		t.Fatal("traced wraps the handler with tracing off")
	}
}

// otlpCollector is a loopback OTLP/HTTP receiver that notes what it was sent.
type otlpCollector struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
	types []string
	sizes []int
}

func newCollector(t *testing.T) *otlpCollector {
	t.Helper()
	c := &otlpCollector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.paths = append(c.paths, r.Method+" "+r.URL.Path)
		c.types = append(c.types, r.Header.Get("Content-Type"))
		c.sizes = append(c.sizes, len(b))
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *otlpCollector) requests() ([]string, []string, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.paths...), append([]string(nil), c.types...), append([]int(nil), c.sizes...)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT the spans go over OTLP/HTTP to the
// collector's /v1/traces, the last of them sent by Close.
func TestOTLPExport(t *testing.T) {
	col := newCollector(t)
	o := newObserved(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL + "/otlp"}, Options{})
	if o.s.tracer == nil || o.s.traces == nil {
		t.Fatal("no tracer with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	if body := o.call(t, o.token(t, "alice"), "open", nil); !strings.Contains(body, `"result"`) {
		t.Fatalf("call: %s", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	paths, types, sizes := col.requests()
	if len(paths) != 1 || paths[0] != "POST /otlp/v1/traces" || types[0] != "application/x-protobuf" || sizes[0] == 0 {
		t.Fatalf("collector got %q %q %v", paths, types, sizes)
	}
}

// The sampling decision is the server's own: with OTEL_TRACES_SAMPLER_ARG=0
// a caller whose traceparent says "sampled" gets nothing exported.
func TestCallerCannotForceSampling(t *testing.T) {
	col := newCollector(t)
	o := newObserved(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "OTEL_TRACES_SAMPLER_ARG": "0"}, Options{})
	tok := o.token(t, "alice")
	for range 5 {
		o.call(t, tok, "open", map[string]string{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if paths, _, _ := col.requests(); len(paths) != 0 {
		t.Fatalf("spans exported at ratio 0: %q", paths)
	}
}

// OTEL_EXPORTER_OTLP_PROTOCOL=grpc builds the gRPC exporter; nothing is
// dialled until there is something to send.
func TestOTLPGRPCPipeline(t *testing.T) {
	cfg := newAuthzServer(t, nil, nil).cfg
	c := *cfg
	c.Tracing.Endpoint, c.Tracing.Protocol, c.Tracing.SampleRatio = "http://127.0.0.1:1", "grpc", 1
	tp, err := newTracerProvider(context.Background(), &c, "test")
	if err != nil || tp == nil {
		t.Fatalf("grpc pipeline: %v %v", tp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = tp.Shutdown(ctx) // nothing was recorded: nothing to send
	c.Tracing.Endpoint = ""
	if tp, err := newTracerProvider(context.Background(), &c, "test"); tp != nil || err != nil {
		t.Fatalf("a pipeline without an endpoint: %v %v", tp, err)
	}
}
