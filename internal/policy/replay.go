package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	bundleapi "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// Logged is one decision as OPA's decision-log plugin wrote it: a line of
// its console logger, or one event of an upload to a decision-log service
// (the two carry the same fields).
type Logged struct {
	DecisionID string `json:"decision_id"`
	Path       string `json:"path"`
	Timestamp  string `json:"timestamp,omitempty"`
	Revision   string `json:"revision,omitempty"`
	Bundles    map[string]struct {
		Revision string `json:"revision"`
	} `json:"bundles,omitempty"`
	Input  json.RawMessage `json:"input"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error,omitempty"`
	// Erased and Masked are the paths the mask policy took out or
	// replaced: the replay decides the input as logged, without them.
	Erased []string `json:"erased,omitempty"`
	Masked []string `json:"masked,omitempty"`
}

// ParseLogged reads one decision-log line: a JSON object, or an array of
// exactly one event (an upload of one).
func ParseLogged(line []byte) (*Logged, error) {
	line = bytes.TrimSpace(line)
	if len(line) > 0 && line[0] == '[' {
		var events []json.RawMessage
		if err := json.Unmarshal(line, &events); err != nil {
			return nil, fmt.Errorf("not a decision log: %w", err)
		}
		if len(events) != 1 {
			return nil, fmt.Errorf("an upload of %d events: give them one per line", len(events))
		}
		line = events[0]
	}
	var l Logged
	if err := json.Unmarshal(line, &l); err != nil {
		return nil, fmt.Errorf("not a decision log: %w", err)
	}
	switch {
	case l.DecisionID == "":
		return nil, errors.New("not a decision log: no decision_id")
	case l.Path != decisionPath && l.Path != visiblePath:
		return nil, fmt.Errorf("decision %s: path %q is not one of mcpguard's (%s, %s)", l.DecisionID, l.Path, decisionPath, visiblePath)
	case len(l.Input) == 0 || string(l.Input) == "null":
		return nil, fmt.Errorf("decision %s: the log holds no input (erased by the mask, or a call refused before the policy was asked)", l.DecisionID)
	}
	return &l, nil
}

// LoggedRevision is the revision the logged decision was made with.
func (l *Logged) LoggedRevision() string {
	if l.Revision != "" {
		return l.Revision
	}
	names := make([]string, 0, len(l.Bundles))
	for n := range l.Bundles {
		names = append(names, n)
	}
	slices.Sort(names)
	revs := make([]string, len(names))
	for i, n := range names {
		revs[i] = n + "=" + l.Bundles[n].Revision
	}
	return strings.Join(revs, ",")
}

// Replayed is a logged decision decided again.
type Replayed struct {
	DecisionID string `json:"decision_id"`
	Path       string `json:"path"`
	// LoggedRevision and Revision are the policy revisions then and now.
	LoggedRevision string `json:"logged_revision"`
	Revision       string `json:"revision"`
	// Logged is the logged result; Now the result of the policy now, in
	// the same shape (a decision object, or the visible names).
	Logged any `json:"logged"`
	Now    any `json:"now"`
	// Differences says what changed, one line each; none: the same.
	Differences []string `json:"differences,omitempty"`
	// MaskedPaths are the input paths the mask policy erased or replaced
	// in the log: the replay saw the masked values.
	MaskedPaths []string `json:"masked_paths,omitempty"`
}

// Replay decides a logged decision's input again with the policy in force
// and compares the result with the logged one.
func (e *Engine) Replay(ctx context.Context, l *Logged) (*Replayed, error) {
	c := e.current.Load()
	if c == nil {
		return nil, ErrNoPolicy
	}
	v, method, err := parseDocument(l.Input)
	if err != nil {
		return nil, fmt.Errorf("decision %s: %w", l.DecisionID, err)
	}
	r := &Replayed{DecisionID: l.DecisionID, Path: l.Path, LoggedRevision: l.LoggedRevision(), Revision: c.revision,
		MaskedPaths: append(slices.Clone(l.Erased), l.Masked...)}
	if err := util.UnmarshalJSON(l.Result, &r.Logged); err != nil && len(l.Result) > 0 {
		return nil, fmt.Errorf("decision %s: result: %w", l.DecisionID, err)
	}
	loggedErr := len(l.Error) > 0 && string(l.Error) != "null"
	if l.Path == visiblePath {
		set, err := e.visibleOf(ctx, c, v, e.timeout*replayListFactor)
		if err != nil {
			return nil, fmt.Errorf("decision %s: %w", l.DecisionID, err)
		}
		en := logEntry{path: visiblePath, visible: set}
		r.Now = en.result()
		r.Differences = diffVisible(r.Logged, set)
	} else {
		d, err := e.decide(ctx, c, v, method)
		en := logEntry{path: decisionPath, d: d}
		r.Now = en.result()
		switch {
		case err != nil && !loggedErr:
			r.Differences = append(r.Differences, "the policy now fails to decide: "+err.Error())
		case err == nil && loggedErr:
			r.Differences = append(r.Differences, "the logged decision was an evaluation error; the policy now decides")
		}
		r.Differences = append(r.Differences, diffDecision(r.Logged, d)...)
	}
	if len(l.Result) == 0 || string(l.Result) == "null" {
		r.Differences = append(r.Differences, "the log holds no result (erased by the mask)")
	}
	return r, nil
}

// replayListFactor widens the timeout of a replayed list filter: the
// command line is not a request, and a long list takes its time.
const replayListFactor = 10

func diffDecision(logged any, now Decision) []string {
	obj, _ := logged.(map[string]any)
	var out []string
	was, _ := obj["allow"].(bool)
	if was != now.Allow {
		out = append(out, fmt.Sprintf("allow: logged %t, now %t", was, now.Allow))
	}
	var then []string
	if rr, ok := obj["reasons"].([]any); ok {
		for _, r := range rr {
			if s, ok := r.(string); ok {
				then = append(then, s)
			}
		}
	}
	for _, r := range now.Reasons {
		if !slices.Contains(then, r) {
			out = append(out, "reason now given: "+r)
		}
	}
	for _, r := range then {
		if !slices.Contains(now.Reasons, r) {
			out = append(out, "reason no longer given: "+r)
		}
	}
	return out
}

func diffVisible(logged any, now map[string]struct{}) []string {
	then := map[string]bool{}
	if list, ok := logged.([]any); ok {
		for _, x := range list {
			if s, ok := x.(string); ok {
				then[s] = true
			}
		}
	}
	var out []string
	for n := range now {
		if !then[n] {
			out = append(out, "now visible: "+n)
		}
	}
	for n := range then {
		if _, ok := now[n]; !ok {
			out = append(out, "no longer visible: "+n)
		}
	}
	slices.Sort(out)
	return out
}

// OpenBundle builds an engine from a bundle file (a .tar.gz as `opa build`
// writes it) or a bundle folder, as a bundle plugin would activate it, for
// the command line (policy replay). Its signature is not verified: the file
// is the operator's own.
func OpenBundle(ctx context.Context, path string, opts ...Option) (*Engine, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var loader bundleapi.DirectoryLoader
	if fi.IsDir() {
		loader = bundleapi.NewDirectoryLoader(path)
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		loader = bundleapi.NewTarballLoaderWithBaseURL(f, path)
	}
	b, err := bundleapi.NewCustomReader(loader).WithRegoVersion(ast.RegoV1).WithSkipBundleVerification(true).Read()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	src := &source{dir: path, modules: map[string]regoFile{}, docs: b.Data}
	for _, m := range b.Modules {
		src.modules[m.Path] = regoFile{raw: m.Raw, parsed: m.Parsed}
	}
	c, err := build(ctx, src, false)
	if err != nil {
		return nil, err
	}
	c.revision = b.Manifest.Revision
	if c.revision == "" {
		c.revision = src.revision()
	}
	e := &Engine{dir: path, timeout: defaultTimeout, first: make(chan struct{}), static: true}
	e.ids.prefix = newIDPrefix()
	e.bg, e.stopBG = context.WithCancel(context.Background())
	WithLogger(discardLogger)(e)
	for _, o := range opts {
		o(e)
	}
	e.swap(c)
	return e, nil
}
