package config

import (
	"strings"
	"testing"
)

// Traces are off unless an OTLP endpoint is named; the endpoint, protocol
// and sampling ratio are checked, each error naming its variable.
func TestTracingSettings(t *testing.T) {
	base := func(kv ...string) map[string]string {
		m := map[string]string{"ENABLE_AUTH": "false", "ENVIRONMENT": "development"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c, err := FromSource(from(base()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing != (Tracing{Protocol: "http/protobuf", SampleRatio: 1}) {
		t.Fatalf("defaults: %+v", c.Tracing)
	}
	c, err = FromSource(from(base("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"OTEL_TRACES_SAMPLER_ARG", "0.25")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing != (Tracing{Endpoint: "http://otel-collector:4317", Protocol: "grpc", SampleRatio: 0.25}) {
		t.Fatalf("read: %+v", c.Tracing)
	}
	for _, kv := range [][2]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4318"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://otel-collector"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:secret@otel.example.com"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
		{"OTEL_TRACES_SAMPLER_ARG", "1.5"},
		{"OTEL_TRACES_SAMPLER_ARG", "-0.1"},
		{"OTEL_TRACES_SAMPLER_ARG", "half"},
		{"SHUTDOWN_TIMEOUT", "-1s"},
	} {
		_, err := FromSource(from(base(kv[0], kv[1])))
		if err == nil || !strings.Contains(err.Error(), kv[0]+":") {
			t.Errorf("%s=%s accepted: %v", kv[0], kv[1], err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("the error repeats a credential: %v", err)
		}
	}
}
