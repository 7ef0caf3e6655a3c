// Command argocd-cm writes deploy/argocd/argocd-cm.yaml from the Lua scripts beside it.
// Run from tests/gitops: go run ./cmd/argocd-cm
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/recur-dev/recur/tests/gitops/argocd"
)

func main() {
	dir := filepath.Join("..", "..", "deploy", "argocd")
	out, err := argocd.RenderConfigMap(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(dir, "argocd-cm.yaml"), []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
