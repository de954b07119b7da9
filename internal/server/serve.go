package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"golang.org/x/net/netutil"
)

// metricsConnections caps the metrics listener: a scraper needs one or two.
const metricsConnections = 32

// Serve serves the HTTP transports on ln, and /metrics on metrics when it is
// not nil, until ctx ends. Then it stops accepting, ends the open streams at
// once, gives the requests in flight SHUTDOWN_TIMEOUT to finish and returns
// nil; an error means a listener failed or requests had to be cut off.
func (s *Server) Serve(ctx context.Context, ln, metrics net.Listener) error {
	hc := s.cfg.HTTP
	// Every request's context derives from base, cancelled when the shutdown
	// bound is reached; GET requests (the SSE streams, which never finish by
	// themselves) also end on streams, cancelled as soon as shutdown begins.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	errorLog := slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)

	mcpServer := &http.Server{
		Handler:           endOnShutdown(streams, s.Handler()),
		ReadHeaderTimeout: hc.ReadHeaderTimeout,
		IdleTimeout:       hc.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          errorLog,
	}
	mcpServer.RegisterOnShutdown(endStreams)
	errc := make(chan error, 2)
	go func() { errc <- mcpServer.Serve(netutil.LimitListener(ln, hc.MaxConnections)) }()

	var metricsServer *http.Server
	if metrics != nil {
		// Nothing streams here: every phase of a request is bounded.
		metricsServer = &http.Server{
			Handler:           s.MetricsHandler(),
			ReadHeaderTimeout: hc.ReadHeaderTimeout,
			ReadTimeout:       hc.ReadHeaderTimeout,
			WriteTimeout:      hc.BodyTimeout,
			IdleTimeout:       hc.IdleTimeout,
			MaxHeaderBytes:    16 << 10,
			BaseContext:       func(net.Listener) context.Context { return base },
			ErrorLog:          errorLog,
		}
		go func() { errc <- metricsServer.Serve(netutil.LimitListener(metrics, metricsConnections)) }()
	}

	var failed error
	select {
	case <-ctx.Done():
		s.logger.Info("shutting down: streams end now, requests in flight may finish", "within", hc.ShutdownTimeout)
	case failed = <-errc:
		failed = fmt.Errorf("serving HTTP: %w", failed)
	}
	if metricsServer != nil {
		_ = metricsServer.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), hc.ShutdownTimeout)
	defer cancel()
	if err := mcpServer.Shutdown(sctx); err != nil {
		cancelBase()
		_ = mcpServer.Close()
		if failed == nil && errors.Is(err, context.DeadlineExceeded) {
			failed = fmt.Errorf("shutdown: requests still in flight after SHUTDOWN_TIMEOUT=%s were cut off", hc.ShutdownTimeout)
		} else if failed == nil {
			failed = fmt.Errorf("shutdown: %w", err)
		}
	}
	return failed
}

// endOnShutdown ends GET requests, the SSE streams, when shutdown begins:
// they would otherwise hold it to its bound. Other requests keep their
// context, and the time to finish.
func endOnShutdown(shutdown context.Context, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(shutdown, cancel)
		defer stop()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
