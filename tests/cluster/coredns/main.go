// coredns-recur: CoreDNS for the local node (tests/cluster/node.sh) with only the plugins it uses.
// It answers for cluster.local from the apiserver (kubernetes) and nothing else: there is no
// forward plugin, so no name is ever resolved off this machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The directives this build knows, in CoreDNS's own order (core/dnsserver/zdirectives.go): the
// order of the plugin chain, whatever the order in the Corefile.
func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() { coremain.Run() }
