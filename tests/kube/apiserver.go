package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// apiserverFlags are the flags of a small but secure cluster: TLS only, Node+RBAC authorization with
// NodeRestriction admission, static tokens and client certificates for people, real service-account tokens,
// and every certificates.k8s.io version this release serves (v1beta1 ClusterTrustBundle and PodCertificateRequest via runtime-config; v1alpha1 would need alpha
// feature gates and is left off).
func apiserverFlags(dir string, p *PKI, etcdURL string, port int) []string {
	return []string{
		"--etcd-servers=http://" + etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--advertise-address=127.0.0.1",
		// A loopback advertise address cannot be an Endpoints address; nothing here needs the kubernetes
		// Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + p.ServingCertFile,
		"--tls-private-key-file=" + p.ServingKeyFile,
		"--client-ca-file=" + p.ClientCABundleFile,
		"--token-auth-file=" + p.TokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-signing-key-file=" + p.SAKeyFile,
		"--service-account-key-file=" + p.SAKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--runtime-config=certificates.k8s.io/v1beta1=true",
		"--cert-dir=" + filepath.Join(dir, "apiserver"),
		// Every request's user, verb, URI and status code, one JSON line each, so tests can count what a
		// client did (e.g. exactly one status write per CSR) on the real server too.
		"--audit-policy-file=" + p.AuditPolicyFile,
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--v=0",
	}
}

// runAPIServer is what kube-apiserver's own command does (flags, component registry, logging, complete,
// validate, run), but stopped by ctx instead of process signals.
func runAPIServer(ctx context.Context, args []string) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return app.Run(ctx, completed)
}

// waitReady polls /readyz as the admin until it answers 200, the apiserver fails, or 3 minutes pass
// (a cold start on a busy 2-core machine has been seen to take well over a minute).
func waitReady(ctx context.Context, server string, p *PKI, apiDone <-chan error) error {
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.ServingCAFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-apiDone:
			return fmt.Errorf("exited before ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		req, _ := http.NewRequest(http.MethodGet, server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+p.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = resp.Status
	}
	return fmt.Errorf("not ready after 3m (last answer: %s)", last)
}

// startEtcd runs etcd in this process on a free loopback port. Data lives in dir and is thrown away with
// it, so fsync is off and the WAL is not preallocated at its 64 MB default.
func startEtcd(dir string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true
	// etcd logs its own orderly shutdown at error level; startup failures come back from StartEtcd.
	cfg.LogLevel = zapcore.FatalLevel.String()
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("not ready after 60s")
	}
}
