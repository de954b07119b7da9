package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// tracerName is the instrumentation scope of the server's spans.
const tracerName = "github.com/mcpguard/mcpguard/internal/server"

// Span attributes: OpenTelemetry's MCP and GenAI conventions where they name
// the thing, mcpguard's own for the decision.
const (
	attrMethod     = attribute.Key("mcp.method.name")
	attrTool       = attribute.Key("gen_ai.tool.name")
	attrOperation  = attribute.Key("gen_ai.operation.name")
	attrErrorCode  = attribute.Key("rpc.jsonrpc.error_code")
	attrErrorType  = attribute.Key("error.type")
	attrDecisionID = attribute.Key("mcpguard.decision_id")
	attrResult     = attribute.Key("mcpguard.result")
	attrRevision   = attribute.Key("mcpguard.policy.revision")
)

// newTracerProvider builds the OTLP trace pipeline the configuration asks
// for, or returns nil when OTEL_EXPORTER_OTLP_ENDPOINT is not set. Spans are
// batched and sent in the background; a collector that is down costs
// dropped spans, never a request. The exporter also reads the standard
// OTEL_EXPORTER_OTLP_HEADERS, _CERTIFICATE and _TIMEOUT variables from the
// process environment (credentials for the collector belong there, not in
// the endpoint).
func newTracerProvider(ctx context.Context, cfg *config.Config, version string) (*sdktrace.TracerProvider, error) {
	tc := cfg.Tracing
	if tc.Endpoint == "" {
		return nil, nil
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch tc.Protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(tc.Endpoint))
	default:
		// OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL: traces go
		// to its /v1/traces, as every OpenTelemetry SDK sends them.
		u, perr := url.Parse(tc.Endpoint)
		if perr != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", perr)
		}
		u.Path = strings.TrimRight(u.Path, "/") + "/v1/traces"
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	}
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP exporter: %w", err)
	}
	// The sampling decision is this server's: a caller's traceparent links
	// the span into its trace, but its "sampled" flag cannot make every
	// request of a flood exported.
	ratio := sdktrace.TraceIDRatioBased(tc.SampleRatio)
	sampler := sdktrace.ParentBased(ratio, sdktrace.WithRemoteParentSampled(ratio), sdktrace.WithRemoteParentNotSampled(ratio))
	res := sdkresource.NewSchemaless(attribute.String("service.name", cfg.ServerName), attribute.String("service.version", version))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sampler), sdktrace.WithResource(res)), nil
}

// traced opens a span around each MCP request (the decision and the handler
// it lets through), when tracing is on; otherwise it returns next itself, so
// the request path pays nothing for it.
func (s *Server) traced(next mcp.MethodHandler) mcp.MethodHandler {
	if s.tracer == nil {
		return next
	}
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		ctx = remoteParent(ctx, req)
		name, attrs := method, []attribute.KeyValue{attrMethod.String(method)}
		if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok && p != nil {
			// Names the caller made up stay out: span names are meant to
			// be few, and the tool name is the caller's to choose.
			if _, known := s.catalog.toolAnnotations[p.Name]; known {
				name = method + " " + p.Name
				attrs = append(attrs, attrTool.String(p.Name), attrOperation.String("execute_tool"))
			}
		}
		if st := s.engine.Status(); st.Revision != "" {
			attrs = append(attrs, attrRevision.String(st.Revision))
		}
		ctx, span := s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		res, err := next(ctx, method, req)
		if err != nil {
			var je *jsonrpc.Error
			switch {
			case errors.As(err, &je) && je.Code == CodeAccessDenied:
				span.SetAttributes(attrResult.String("deny"))
			case errors.As(err, &je) && je.Code == CodeAuthorizationUnavailable:
				span.SetAttributes(attrResult.String("error"))
			}
			if je != nil {
				span.SetAttributes(attrErrorCode.Int64(je.Code), attrErrorType.String(strconv.FormatInt(je.Code, 10)))
				span.SetStatus(codes.Error, je.Message)
			} else {
				span.SetAttributes(attrErrorType.String("_OTHER"))
				span.SetStatus(codes.Error, "the request failed")
			}
		}
		return res, err
	}
}

// noteDecision puts a decision on the request's span, when tracing is on.
func (s *Server) noteDecision(ctx context.Context, d policy.Decision, err error) {
	if s.tracer == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	result := "deny"
	switch {
	case err != nil:
		result = "error"
	case d.Allow:
		result = "allow"
	}
	span.SetAttributes(attrDecisionID.String(d.ID), attrResult.String(result))
}

// remoteParent continues the caller's trace: the W3C traceparent of the
// HTTP request, or, as MCP carries it over any transport, of the request's
// _meta.
func remoteParent(ctx context.Context, req mcp.Request) context.Context {
	tc := propagation.TraceContext{}
	if extra := req.GetExtra(); extra != nil && extra.Header != nil {
		if c := tc.Extract(ctx, propagation.HeaderCarrier(extra.Header)); trace.SpanContextFromContext(c).IsRemote() {
			return c
		}
	}
	if params := req.GetParams(); params != nil && !isNilParams(params) {
		if meta := params.GetMeta(); meta != nil {
			return tc.Extract(ctx, metaCarrier(meta))
		}
	}
	return ctx
}

// metaCarrier reads trace context from a request's _meta.
type metaCarrier map[string]any

func (m metaCarrier) Get(key string) string {
	v, _ := m[key].(string)
	return v
}

func (m metaCarrier) Set(string, string) {}

func (m metaCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// isNilParams reports whether params is a typed nil (a request sent without them).
func isNilParams(params mcp.Params) bool {
	v := reflect.ValueOf(params)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// startTracing sets the server's tracer: tp when a test hands one, else the
// OTLP pipeline the configuration asks for, else none.
func (s *Server) startTracing(ctx context.Context, tp trace.TracerProvider) error {
	if tp == nil {
		sdk, err := newTracerProvider(ctx, s.cfg, Version)
		if err != nil || sdk == nil {
			return err
		}
		s.traces, tp = sdk, sdk
	}
	s.tracer = tp.Tracer(tracerName, trace.WithInstrumentationVersion(Version))
	return nil
}
