// Command controlplane runs a real Kubernetes control plane for csr-signer's tests and for contributors:
// embedded etcd, kube-apiserver (the real one, through its own command and flag parsing) and, on request,
// kube-controller-manager with only the CSR controllers, all on loopback.
//
//	controlplane [--dir DIR] [--kcm --kcm-signing-cert F --kcm-signing-key F] [--extra-client-ca F]
//	             [--exit-on-stdin-eof] [-- extra kube-apiserver flags]
//
// When the apiserver is ready it writes DIR/kubeconfig (contexts admin, developer, approver, node-1,
// team-a, team-b, signer) and prints one JSON line on stdout describing what it started (see Ready).
// SIGTERM or SIGINT stop it cleanly; with --exit-on-stdin-eof so does the end of standard input, which lets
// a test process that dies without cleaning up take its control plane with it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "kube-controller-manager" {
		// Run in a child process: kube-apiserver and kube-controller-manager each own process-wide state
		// (feature gates, logging, the component registry) and cannot share one process.
		cmd := kcmapp.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		if err := cmd.Execute(); err != nil {
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

// Options are the harness's own flags; everything after "--" goes to kube-apiserver unchanged.
type Options struct {
	Dir            string
	KCM            bool
	KCMSigningCert string
	KCMSigningKey  string
	KCMArgs        []string
	ExtraClientCA  string
	ExitOnStdinEOF bool
	APIServerArgs  []string
}

// Ready is the JSON line printed on stdout once every component is up.
type Ready struct {
	Kubeconfig string            `json:"kubeconfig"`
	Server     string            `json:"server"`
	Dir        string            `json:"dir"`
	ServingCA  string            `json:"servingCA"`
	ClientCA   string            `json:"clientCA"`
	ClientKey  string            `json:"clientCAKey"`
	Tokens     map[string]string `json:"tokens"`
	AuditLog   string            `json:"auditLog"`
	KCM        bool              `json:"kcm"`
	StartupMS  int64             `json:"startupMillis"`
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseOptions(args []string) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.StringVar(&o.Dir, "dir", "", "state directory (certificates, etcd data, kubeconfig); default: a new temporary directory, removed on exit")
	fs.BoolVar(&o.KCM, "kcm", false, "also run kube-controller-manager with the csrsigning, csrapproving and csrcleaner controllers")
	fs.StringVar(&o.KCMSigningCert, "kcm-signing-cert", "", "CA certificate for the built-in kubernetes.io signers (default: a generated CA in DIR)")
	fs.StringVar(&o.KCMSigningKey, "kcm-signing-key", "", "key of --kcm-signing-cert")
	var kcmArgs stringList
	fs.Var(&kcmArgs, "kcm-arg", "extra kube-controller-manager flag (repeatable), e.g. --kcm-arg=--cluster-signing-duration=1h")
	fs.StringVar(&o.ExtraClientCA, "extra-client-ca", "", "PEM file of further CAs whose client certificates the apiserver accepts (--client-ca-file is the harness's CA plus these)")
	fs.BoolVar(&o.ExitOnStdinEOF, "exit-on-stdin-eof", false, "stop when standard input reaches end of file (for test processes)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.KCMArgs = kcmArgs
	o.APIServerArgs = fs.Args()
	if (o.KCMSigningCert == "") != (o.KCMSigningKey == "") {
		return o, errors.New("--kcm-signing-cert and --kcm-signing-key go together")
	}
	return o, nil
}

func run(args []string) error {
	start := time.Now()
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	removeDir := false
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "csr-signer-kube-"); err != nil {
			return err
		}
		removeDir = true
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return err
	}
	defer func() {
		if removeDir {
			os.RemoveAll(o.Dir)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if o.ExitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	pki, err := writePKI(o.Dir, o.ExtraClientCA)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, err := startEtcd(filepath.Join(o.Dir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	port, err := freePort()
	if err != nil {
		return err
	}
	apiArgs := apiserverFlags(o.Dir, pki, etcd.Clients[0].Addr().String(), port)
	apiArgs = append(apiArgs, o.APIServerArgs...)
	server := fmt.Sprintf("https://127.0.0.1:%d", port)

	apiDone := make(chan error, 1)
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	go func() { apiDone <- runAPIServer(apiCtx, apiArgs) }()

	if err := waitReady(ctx, server, pki, apiDone); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	ident, err := bootstrap(ctx, server, pki)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	kubeconfig := filepath.Join(o.Dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki.ServingCAFile, ident); err != nil {
		return err
	}

	var kcm *exec.Cmd
	if o.KCM {
		if kcm, err = startKCM(o, pki, kubeconfig); err != nil {
			return fmt.Errorf("kube-controller-manager: %w", err)
		}
	}

	ready := Ready{
		Kubeconfig: kubeconfig, Server: server, Dir: o.Dir, ServingCA: pki.ServingCAFile,
		ClientCA: pki.ClientCAFile, ClientKey: pki.ClientCAKeyFile, Tokens: ident.tokens, KCM: o.KCM,
		AuditLog:  filepath.Join(o.Dir, "audit.log"),
		StartupMS: time.Since(start).Milliseconds(),
	}
	line, _ := json.Marshal(ready)
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "%s\n", line)
	out.Flush()
	fmt.Fprintf(os.Stderr, "controlplane: ready in %.1fs; export KUBECONFIG=%s\n", time.Since(start).Seconds(), kubeconfig)

	var kcmDone chan error
	if kcm != nil {
		kcmDone = make(chan error, 1)
		go func() { kcmDone <- kcm.Wait() }()
	}
	select {
	case <-ctx.Done():
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-kcmDone:
		return fmt.Errorf("kube-controller-manager stopped: %v", err)
	}
	fmt.Fprintln(os.Stderr, "controlplane: stopping")
	if kcm != nil && kcm.ProcessState == nil {
		_ = kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-kcmDone:
		case <-time.After(5 * time.Second):
			_ = kcm.Process.Kill()
		}
	}
	stopAPI()
	select {
	case <-apiDone:
	case <-time.After(20 * time.Second):
		fmt.Fprintln(os.Stderr, "controlplane: kube-apiserver did not stop within 20s")
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
