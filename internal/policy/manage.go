package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	bundleapi "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/sirupsen/logrus"
)

// Management is OPA's management plane for the engine: an OPA configuration
// exactly as OPA documents it (services, bundles with their signing keys,
// decision_logs, status, persistence_directory, labels). Its plugins are
// OPA's own, run by OPA's plugin manager: the bundle plugin downloads,
// verifies, persists and activates bundles; the decision-log plugin masks,
// prints and uploads decisions; the status plugin reports.
type Management struct {
	// Config is the OPA configuration, YAML or JSON.
	Config []byte
	// Console is where OPA's console logger writes (console decision logs
	// and status): standard error when nil.
	Console io.Writer
	// ID names this instance in labels and status reports; random when
	// empty.
	ID string
	// Wait bounds how long New waits for the first bundle, from disk or
	// downloaded; one minute when zero.
	Wait time.Duration
}

// opaPlane is the running plugin manager.
type opaPlane struct {
	manager *plugins.Manager
	store   *gatedStore
	// refused is the message of the last activation the engine refused,
	// which the bundle plugin reports again to its listener.
	refused atomic.Pointer[string]
	// lastBundleError is the bundle plugin's last error, for New's.
	lastBundleError atomic.Pointer[string]
	// started: Stop may be called (a plugin never started would block it).
	started bool
}

// bundleListener names the engine's listener on the bundle plugin.
type bundleListener struct{}

func (e *Engine) startOPA(ctx context.Context) error {
	m := e.mgmt
	id := m.ID
	if id == "" {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		id = hex.EncodeToString(b)
	}
	console := logging.New()
	console.SetFormatter(&logrus.JSONFormatter{})
	if m.Console != nil {
		console.SetOutput(m.Console)
	} else {
		console.SetOutput(os.Stderr)
	}
	e.opa = &opaPlane{}
	e.opa.store = &gatedStore{Store: inmem.New(), gate: e.gate, writes: map[storage.Transaction]*storage.Context{}}
	manager, err := plugins.New(m.Config, id, e.opa.store,
		plugins.Logger(&opaLogger{l: e.logger}),
		plugins.ConsoleLogger(console),
		plugins.WithParserOptions(ast.ParserOptions{RegoVersion: ast.RegoV1}),
	)
	if err != nil {
		return fmt.Errorf("OPA configuration: %w", err)
	}
	e.opa.manager = manager
	cfg := manager.GetConfig()
	for _, w := range cfg.Warnings {
		e.logger.Warn("OPA configuration", "warning", w)
	}
	if len(cfg.Discovery) > 0 {
		return errors.New("OPA configuration: discovery is not supported; configure bundles, decision_logs and status directly")
	}
	if len(cfg.Plugins) > 0 {
		return errors.New("OPA configuration: custom plugins are not supported")
	}
	e.fromBundles = len(cfg.Bundles) > 0 || len(cfg.Bundle) > 0
	// The discovery plugin, without a discovery section, registers the
	// plugins the configuration names, as OPA's SDK does.
	d, err := discovery.New(manager)
	if err != nil {
		return fmt.Errorf("OPA configuration: %w", err)
	}
	manager.Register(discovery.Name, d)
	if bp := bundle.Lookup(manager); bp != nil {
		bp.Register(bundleListener{}, e.bundleStatus)
	}
	if logs.Lookup(manager) != nil {
		e.dlog = newDecisionLog(manager, &e.status.dropped, e.logger)
	}
	// Under the engine's context: the plugins outlive New's.
	e.opa.started = true
	if err := manager.Start(e.bg); err != nil {
		return fmt.Errorf("starting OPA's plugins: %w", err)
	}
	if !e.fromBundles {
		return nil
	}
	// Bundles downloaded on demand (trigger: manual) are fetched once
	// now; polled ones are being fetched already. An error is the bundle
	// status's, which the wait below reports.
	_ = e.opa.trigger(ctx, e.logger)
	wait := m.Wait
	if wait <= 0 {
		wait = time.Minute
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-e.first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the first policy bundle: %w%s", ctx.Err(), e.opa.why(e))
	case <-t.C:
		return fmt.Errorf("no policy bundle was activated within %s%s", wait, e.opa.why(e))
	}
}

// why says what kept the first bundle out, if anything did.
func (o *opaPlane) why(e *Engine) string {
	if err := e.Status().LastError; err != nil {
		return ": " + err.Error()
	}
	if p := o.lastBundleError.Load(); p != nil {
		return ": " + *p
	}
	return ""
}

// trigger asks the bundle plugin to download every bundle now, when the
// configuration says so (trigger: manual). Polled bundles are OPA's to
// fetch: its downloader's Trigger is not meant to run beside its polling.
func (o *opaPlane) trigger(ctx context.Context, logger *slog.Logger) error {
	bp := bundle.Lookup(o.manager)
	if bp == nil {
		return nil
	}
	for name, src := range bp.Config().Bundles {
		if src.Trigger == nil || *src.Trigger != plugins.TriggerManual {
			logger.Info("bundles are polled by OPA's bundle plugin: the next poll brings a new one", "bundle", name)
			return nil
		}
	}
	return bp.Trigger(ctx)
}

// gate decides whether a bundle activation may commit. OPA's bundle plugin
// activates a bundle in one write transaction, with the compiler it built
// on the transaction's context; the gate builds the engine's policy from
// what the transaction holds, as a folder would be built (the same checks,
// the strict compile, the bundle's own tests), and refuses the commit when
// that fails: OPA then keeps the previous bundle, does not persist the
// refused one, and reports the error in its bundle status. After the commit
// the engine swaps the new policy in.
func (e *Engine) gate(ctx context.Context, store storage.Store, txn storage.Transaction) (func(), error) {
	names, err := bundleapi.ReadBundleNamesFromStore(ctx, store, txn)
	if err != nil && !storage.IsNotFound(err) {
		return nil, err
	}
	if len(names) == 0 {
		// The manager's own first transaction: nothing activated yet.
		return func() {}, nil
	}
	c, err := buildFromStore(ctx, store, txn, names)
	if err != nil {
		// A message of its own, not OPA's compile error type: the bundle
		// status then carries the whole text, file and line included.
		refused := fmt.Sprintf("bundle refused: %v", err)
		e.opa.refused.Store(&refused)
		return nil, e.refuse(errors.New(refused))
	}
	return func() { e.swap(c) }, nil
}

// buildFromStore builds the policy of the bundles a transaction holds.
func buildFromStore(ctx context.Context, store storage.Store, txn storage.Transaction, names []string) (*compiled, error) {
	ids, err := store.ListPolicies(ctx, txn)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	src := &source{dir: "bundle " + strings.Join(names, ","), modules: make(map[string]regoFile, len(ids))}
	for _, id := range ids {
		raw, err := store.GetPolicy(ctx, txn, id)
		if err != nil {
			return nil, err
		}
		m, err := ast.ParseModuleWithOpts(id, string(raw), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, err
		}
		src.modules[id] = regoFile{raw: raw, parsed: m}
	}
	data, err := store.Read(ctx, txn, storage.Path{})
	if err != nil {
		return nil, err
	}
	// A copy: the engine's store must not share maps OPA's store may
	// change in place on a later activation.
	if err := util.RoundTrip(&data); err != nil {
		return nil, err
	}
	docs, ok := data.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: data is %T, not an object", src.dir, data)
	}
	src.docs = docs
	c, err := build(ctx, src, true)
	if err != nil {
		return nil, err
	}
	c.bundles = make(map[string]server.BundleInfo, len(names))
	revs := make([]string, 0, len(names))
	for _, n := range names {
		rev, err := bundleapi.ReadBundleRevisionFromStore(ctx, store, txn, n)
		if err != nil && !storage.IsNotFound(err) {
			return nil, err
		}
		c.bundles[n] = server.BundleInfo{Revision: rev}
		revs = append(revs, n+"="+rev)
	}
	switch {
	case len(names) == 1 && c.bundles[names[0]].Revision != "":
		c.revision = c.bundles[names[0]].Revision
	case len(names) == 1:
		c.revision = src.revision()
	default:
		c.revision = strings.Join(revs, ",")
	}
	return c, nil
}

// bundleStatus hears the bundle plugin after each download or activation.
// Refusals the gate made are counted there, with their detail; a bundle
// that OPA itself refused (a bad signature, a bundle that does not parse)
// is counted here; a server that cannot be reached changes nothing.
func (e *Engine) bundleStatus(s bundle.Status) {
	if s.Code == "" {
		return
	}
	msg := s.Message
	for _, x := range s.Errors {
		msg += "; " + x.Error()
	}
	e.opa.lastBundleError.Store(&msg)
	if p := e.opa.refused.Swap(nil); p != nil && *p == s.Message {
		return
	}
	if s.HTTPCode != "" || strings.HasPrefix(s.Message, "request failed") {
		e.logger.Warn("policy bundle server unreachable; the policy in force stays", "bundle", s.Name, "error", msg)
		return
	}
	_ = e.refuse(fmt.Errorf("bundle %s refused: %s", s.Name, msg))
}

// mirror gives OPA's plugins the folder's policy: the decision-log plugin
// evaluates the mask (data.system.log.mask) with the manager's compiler and
// store. The compiler goes on the transaction's context, as the bundle
// plugin does; the manager takes it from there.
func (o *opaPlane) mirror(ctx context.Context, c *compiled) error {
	docs := any(c.loaded.Documents)
	if err := util.RoundTrip(&docs); err != nil {
		return err
	}
	if docs == nil {
		docs = map[string]any{}
	}
	params := storage.WriteParams
	params.Context = storage.NewContext()
	params.Context.Put(mirrored{}, true)
	plugins.SetCompilerOnContext(params.Context, c.compiler)
	return storage.Txn(ctx, o.store, params, func(txn storage.Transaction) error {
		return o.store.Write(ctx, txn, storage.ReplaceOp, storage.Path{}, docs)
	})
}

// gatedStore is OPA's in-memory store with a gate on the commits of bundle
// activations (write transactions that carry a compiler).
type gatedStore struct {
	storage.Store
	gate   func(context.Context, storage.Store, storage.Transaction) (func(), error)
	mu     sync.Mutex
	writes map[storage.Transaction]*storage.Context
}

func (s *gatedStore) NewTransaction(ctx context.Context, params ...storage.TransactionParams) (storage.Transaction, error) {
	txn, err := s.Store.NewTransaction(ctx, params...)
	if err == nil && len(params) > 0 && params[0].Write {
		s.mu.Lock()
		s.writes[txn] = params[0].Context
		s.mu.Unlock()
	}
	return txn, err
}

func (s *gatedStore) take(txn storage.Transaction) (*storage.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.writes[txn]
	delete(s.writes, txn)
	return c, ok
}

func (s *gatedStore) Commit(ctx context.Context, txn storage.Transaction) error {
	sctx, write := s.take(txn)
	if !write || sctx == nil || plugins.GetCompilerOnContext(sctx) == nil || sctx.Get(mirrored{}) != nil {
		return s.Store.Commit(ctx, txn)
	}
	after, err := s.gate(ctx, s.Store, txn)
	if err != nil {
		// storage.Txn aborts only when its function fails: a failed
		// commit must release the write transaction itself.
		s.Store.Abort(ctx, txn)
		return err
	}
	if err := s.Store.Commit(ctx, txn); err != nil {
		return err
	}
	after()
	return nil
}

func (s *gatedStore) Abort(ctx context.Context, txn storage.Transaction) {
	s.take(txn)
	s.Store.Abort(ctx, txn)
}

// mirrored marks the engine's own writes (a folder handed to the plugins):
// they passed the engine's checks already.
type mirrored struct{}

// opaLogger passes OPA's log records on to the server's logger.
type opaLogger struct {
	l      *slog.Logger
	fields []any
}

func (o *opaLogger) log(level slog.Level, format string, a []any) {
	if !o.l.Enabled(context.Background(), level) {
		return
	}
	o.l.Log(context.Background(), level, fmt.Sprintf(format, a...), append([]any{"component", "opa"}, o.fields...)...)
}

func (o *opaLogger) Debug(f string, a ...any) { o.log(slog.LevelDebug, f, a) }
func (o *opaLogger) Info(f string, a ...any)  { o.log(slog.LevelInfo, f, a) }
func (o *opaLogger) Warn(f string, a ...any)  { o.log(slog.LevelWarn, f, a) }
func (o *opaLogger) Error(f string, a ...any) { o.log(slog.LevelError, f, a) }

func (o *opaLogger) WithFields(fields map[string]any) logging.Logger {
	n := &opaLogger{l: o.l, fields: append([]any(nil), o.fields...)}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n.fields = append(n.fields, k, fields[k])
	}
	return n
}

func (o *opaLogger) GetLevel() logging.Level {
	switch {
	case o.l.Enabled(context.Background(), slog.LevelDebug):
		return logging.Debug
	case o.l.Enabled(context.Background(), slog.LevelInfo):
		return logging.Info
	case o.l.Enabled(context.Background(), slog.LevelWarn):
		return logging.Warn
	}
	return logging.Error
}

func (o *opaLogger) SetLevel(logging.Level) {}
