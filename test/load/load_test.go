package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// Each recorded value's bucket stands for it within 1/256 of it.
func TestHistogramPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64N(1 << r.IntN(62))
		mid := bucketMid(bucketOf(v))
		if diff := math.Abs(float64(mid) - float64(v)); diff > float64(v)/256+0.5 {
			t.Fatalf("value %d in a bucket standing for %d", v, mid)
		}
	}
	for v := range uint64(1000) { // exact below 128, and bucket order follows value order
		if v < 128 && bucketMid(bucketOf(v)) != v {
			t.Fatalf("small value %d stands as %d", v, bucketMid(bucketOf(v)))
		}
		if v > 0 && bucketOf(v) < bucketOf(v-1) {
			t.Fatalf("bucket of %d before bucket of %d", v, v-1)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 10000; i++ { // 1 µs … 10 ms
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {1, 10 * time.Millisecond}, {0.0001, time.Microsecond}} {
		got := h.quantile(c.q)
		if math.Abs(float64(got-c.want)) > float64(c.want)/256 {
			t.Errorf("quantile(%v) = %s, want %s", c.q, got, c.want)
		}
	}
	var a, b hist
	a.add(time.Millisecond)
	b.add(3 * time.Millisecond)
	b.add(3 * time.Millisecond)
	a.merge(&b)
	if a.n != 3 || a.quantile(0.34) < 2*time.Millisecond || a.quantile(0.33) > 2*time.Millisecond {
		t.Errorf("merged: n %d, q.33 %s, q.34 %s", a.n, a.quantile(0.33), a.quantile(0.34))
	}
	if (&hist{}).quantile(0.5) != 0 {
		t.Error("an empty histogram has a median")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_memstats_mallocs_total Total number of heap objects allocated.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total 1.234567e+06
go_gc_gogc_percent 100
go_gc_gomemlimit_bytes 9.223372036854776e+18
mcpguard_policy_decisions_total{method="tools/call",result="allow"} 7
`
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)), []string{seriesMallocs, seriesGOGC, seriesMemLimit})
	if err != nil {
		t.Fatal(err)
	}
	if m[seriesMallocs] != 1234567 || m[seriesGOGC] != 100 {
		t.Errorf("parsed %v", m)
	}
	rt := runtimeVars{gogc: m[seriesGOGC], memlimit: m[seriesMemLimit], maxprocs: 2, known: true}
	if got := strings.Join(rt.env(), " "); got != "GOGC=100 GOMEMLIMIT=off GOMAXPROCS=2" {
		t.Errorf("runtime env %q", got)
	}
	if got := strings.Join(runtimeVars{gogc: -1, memlimit: 1 << 30, maxprocs: 4, known: true}.env(), " "); got != "GOGC=off GOMEMLIMIT=1073741824 GOMAXPROCS=4" {
		t.Errorf("runtime env %q", got)
	}
	// go_gc_gogc_percent of a process run with GOGC=off: 2^64.
	if got := (runtimeVars{gogc: 18446744073709551616, known: true}).gogcEnv(); got != "off" {
		t.Errorf("GOGC=off read as %q", got)
	}
	if _, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)), []string{seriesMaxProcs}); err == nil {
		t.Error("a missing series was not reported")
	}
	// A labelled series is not the unlabelled one asked for.
	if _, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)), []string{"mcpguard_policy_decisions_total"}); err == nil {
		t.Error("a labelled series was read as unlabelled")
	}
}

func TestSSEData(t *testing.T) {
	body := "event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: {\"id\":2}\n\n"
	if got := string(sseData([]byte(body))); got != `{"id":2}` {
		t.Errorf("sseData = %q", got)
	}
	if sseData([]byte(": keep-alive\n\n")) != nil {
		t.Error("data found in a stream without any")
	}
}

func TestOptionsBounded(t *testing.T) {
	for _, args := range [][]string{
		{"-clients", "0"}, {"-clients", "33"}, {"-rounds", "51"}, {"-duration", "31s"}, {"-duration", "10ms"},
		{"-warmup", "-1s"}, {"-modes", "both"}, {"-modes", ","}, {"-client", "curl"}, {"-env", "GOGC"}, {"-max-errors", "-1"}, {"stray"},
		{"-method", "tools/get"}, {"-tools", "10"}, {"-method", "tools/list", "-tools", "0"}, {"-method", "tools/list", "-tools", "1001"},
	} {
		if _, err := parseOptions(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	o, err := parseOptions(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.clients != 4 || len(o.modes) != 2 || o.client != "raw" || o.method != methodCall || o.roles != "data_reader" {
		t.Errorf("defaults: %+v", o)
	}
	l, err := parseOptions([]string{"-method", "tools/list"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if l.tools != 1000 || l.roles != defaultListRoles || l.budget() <= o.budget() {
		t.Errorf("tools/list defaults: %+v", l)
	}
	if n := l.allowedTools(); n != 50 {
		t.Errorf("the default list caller is allowed %d of 1,000 tools, want 50", n)
	}
	// Roles read as mcpguard token --dev reads them, spaces and all.
	l, err = parseOptions([]string{"-method", "tools/list", "-roles", " role_00, role_13 ,role_27,api.role_03,"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if n := l.allowedTools(); n != 50 {
		t.Errorf("spaced roles: allowed %d, want 50", n)
	}
	if b := o.budget(); b <= buildTimeout || b > 2*time.Hour {
		t.Errorf("budget %s", b)
	}
	if _, err := parseOptions([]string{"-h"}, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// A list answer of the wrong length fails, through either client: the run
// cannot measure a server that lists what the caller should not see, or
// misses what it should.
func TestListCountChecked(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "bare"}, nil)
	policytest.RegisterEchoTools(3)(s)
	for _, stateless := range []bool{false, true} {
		hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
			&mcp.StreamableHTTPOptions{Stateless: stateless, JSONResponse: stateless}))
		t.Cleanup(hs.Close)
		for _, kind := range []string{"raw", "sdk"} {
			tg := &target{name: "bare", url: hs.URL, wantTools: 3}
			c, err := openClient(t.Context(), tg, kind, methodList)
			if err != nil {
				t.Fatalf("stateless %v, %s: %v", stateless, kind, err)
			}
			if err := c.call(t.Context()); err != nil {
				t.Errorf("stateless %v, %s: %v", stateless, kind, err)
			}
			// The same answer, expected shorter: the check sees it.
			switch c := c.(type) {
			case *rawCaller:
				c.wantTools = 2
			case *sdkCaller:
				c.wantTools = 2
			}
			if err := c.call(t.Context()); err == nil || !strings.Contains(err.Error(), "listed 3 tools") {
				t.Errorf("stateless %v, %s: a list of 3 passed for 2: %v", stateless, kind, err)
			}
			c.close()
			// A caller expecting another count fails on its first list.
			tg.wantTools = 4
			if c, err := openClient(t.Context(), tg, kind, methodList); err == nil {
				c.close()
				t.Errorf("stateless %v, %s: a list of 3 passed for 4", stateless, kind)
			}
		}
	}
}
