package controlplane

import (
	"context"
	"math"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hac-project/hac/internal/meter"
	"github.com/hac-project/hac/internal/store"
)

// observer holds the control plane's own metrics: how fast it answers,
// how its store commits, how its queue drains.
type observer struct {
	requests *prometheus.HistogramVec // by procedure and code
	commits  prometheus.Histogram
	group    prometheus.Histogram
	started  prometheus.Counter
	ended    *prometheus.CounterVec // by final state
	// The meter, as records close: held time by kind, item and whether
	// it is charged; GPU time by model; charges by kind.
	metered *prometheus.CounterVec
	gpus    *prometheus.CounterVec
	charges *prometheus.CounterVec
}

func newObserver() *observer {
	return &observer{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hac_api_request_duration_seconds",
			Help:    "API calls by procedure and result code, from the call's start to its answer (streams: to their end).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"procedure", "code"}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hac_store_commit_seconds",
			Help:    "Group commits of the broker's changes, from their transaction's start to the commit on disk.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}),
		group: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hac_store_commit_changes",
			Help:    "Changes written by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		started: prometheus.NewCounter(prometheus.CounterOpts{Name: "hac_jobs_started_total", Help: "Jobs granted the pool."}),
		ended:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hac_jobs_ended_total", Help: "Jobs ended, by final state; with hac_jobs_started_total, the queue's drain rate."}, []string{"state"}),
		metered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hac_metered_seconds_total",
			Help: "Metered time of closed records, by price kind (model, server, stopped-server), item and whether it is charged (runs an infrastructure fault ended are not)."},
			[]string{"kind", "item", "charged"}),
		gpus: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hac_held_gpu_seconds_total",
			Help: "GPU time jobs held, by accelerator model: held time times GPUs, counted when the job ends."}, []string{"model"}),
		charges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hac_charges_total",
			Help: "Charges of closed records in the currency's major units (not rounded: statements round per line), by price kind; a fault its node reports late is not taken back here."},
			[]string{"kind", "currency"}),
	}
}

// meter is a store meter observer: it counts what each commit closed.
func (o *observer) meter(cur meter.Currency) func([]store.Metered) {
	major := math.Pow10(cur.Digits)
	return func(ms []store.Metered) {
		for _, m := range ms {
			o.metered.WithLabelValues(string(m.Kind), m.Item, strconv.FormatBool(m.Charged)).Add(float64(m.HeldMS) / 1000)
			if m.Kind == meter.KindModel {
				o.gpus.WithLabelValues(m.Item).Add(float64(m.GPUMS) / 1000)
			}
			if m.Charged {
				o.charges.WithLabelValues(string(m.Kind), cur.Code).Add(float64(m.HeldMS) * float64(m.PerHour) / 3.6e6 / major)
			}
		}
	}
}

func (o *observer) register(reg *prometheus.Registry) {
	reg.MustRegister(o.requests, o.commits, o.group, o.started, o.ended, o.metered, o.gpus, o.charges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// commit is a store.CommitObserver.
func (o *observer) commit(changes int, d time.Duration) {
	o.commits.Observe(d.Seconds())
	o.group.Observe(float64(changes))
}

var _ store.CommitObserver = (*observer)(nil).commit

// interceptor times every call by its procedure: connect answers unknown
// procedures before interceptors run, so the labels are the API's own.
func (o *observer) interceptor() connect.Interceptor { return timing{o} }

type timing struct{ o *observer }

func (t timing) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		t.o.requests.WithLabelValues(req.Spec().Procedure, codeName(err)).Observe(time.Since(start).Seconds())
		return res, err
	}
}

func (t timing) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (t timing) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		t.o.requests.WithLabelValues(conn.Spec().Procedure, codeName(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// adminOnly admits requests with an admin's user token.
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r.Context(), r.Header)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case p.kind != store.UserToken || !p.user.Admin:
			http.Error(w, "only an admin's token may read the control plane's metrics and profiles", http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// profiles is net/http/pprof behind adminOnly.
func (s *Server) profiles(mux *http.ServeMux) {
	mux.Handle("GET /debug/pprof/", s.adminOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/cmdline", s.adminOnly(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("GET /debug/pprof/profile", s.adminOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", s.adminOnly(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", s.adminOnly(http.HandlerFunc(pprof.Trace)))
}
