// hello: the test image of the node checks. Serves "hello from <pod name>" on / and "ok" on
// /healthz (the readiness probe), on $PORT (default 8080); exits 0 on SIGTERM.
//
// `hello probe NAME...` instead checks what an in-cluster controller needs from inside a pod:
// it resolves each NAME through the pod's DNS (!NAME: NAME must not resolve), then GETs
// https://kubernetes.default.svc/version and creates a SelfSubjectReview (`kubectl auth whoami`)
// with the ServiceAccount token and CA mounted at /var/run/secrets/kubernetes.io/serviceaccount.
// One line per check on stdout ("dns NAME ADDRS", "dns NAME unresolved", "apiserver version V",
// "apiserver user U", or "FAIL ..."); exits 1 if any check fails.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2:]))
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("hello listening on :%s", port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func probe(names []string) int {
	failed := 0
	fail := func(format string, args ...any) {
		fmt.Printf("FAIL "+format+"\n", args...)
		failed = 1
	}
	for _, name := range names {
		// !NAME: a name that must not resolve (nothing is resolved off this machine).
		absent := strings.HasPrefix(name, "!")
		name = strings.TrimPrefix(name, "!")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		cancel()
		switch {
		case absent && err != nil:
			fmt.Printf("dns %s unresolved\n", name)
		case absent:
			fail("dns %s resolved to %s", name, strings.Join(addrs, ","))
		case err != nil:
			fail("dns %s: %v", name, err)
		default:
			fmt.Printf("dns %s %s\n", name, strings.Join(addrs, ","))
		}
	}

	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		fail("apiserver: no ServiceAccount token: %v", err)
		return 1
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		fail("apiserver: no CA: %v", err)
		return 1
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fail("apiserver: %s/ca.crt holds no certificate", saDir)
		return 1
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	call := func(method, path string, body []byte, out any) error {
		req, err := http.NewRequest(method, "https://kubernetes.default.svc"+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
		}
		return json.Unmarshal(data, out)
	}
	var version struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := call("GET", "/version", nil, &version); err != nil {
		fail("apiserver version: %v", err)
	} else {
		fmt.Printf("apiserver version %s\n", version.GitVersion)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	if err := call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body, &review); err != nil {
		fail("apiserver user: %v", err)
	} else {
		fmt.Printf("apiserver user %s\n", review.Status.UserInfo.Username)
	}
	return failed
}
