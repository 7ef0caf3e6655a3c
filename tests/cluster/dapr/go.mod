// Wrapper module: builds the real Dapr sidecar (daprd) from a pinned release. Go ignores the
// replace directives of dependencies, so dapr's own are copied here (go mod edit -json on its go.mod).
// v1.16.5 is the newest release whose components-contrib the Go module proxy serves.
module recur.dev/tests/cluster/dapr

go 1.26.0

require github.com/dapr/dapr v1.16.5

replace (
	dubbo.apache.org/dubbo-go/v3 => dubbo.apache.org/dubbo-go/v3 v3.0.3-0.20230118042253-4f159a2b38f3
	github.com/chenzhuoyu/iasm => github.com/chenzhuoyu/iasm v0.9.0
	github.com/chzyer/logex => github.com/chzyer/logex v1.2.1
	github.com/gobwas/pool => github.com/gobwas/pool v0.2.1
	github.com/toolkits/concurrent => github.com/niean/gotools v0.0.0-20151221085310-ff3f51fc5c60
	gopkg.in/couchbaselabs/gocbconnstr.v1 => github.com/couchbaselabs/gocbconnstr v1.0.5
)
