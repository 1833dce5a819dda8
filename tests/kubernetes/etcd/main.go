// etcd, built from go.etcd.io/etcd/server/v3 at the version go.mod pins: upstream's own main
// (server/main.go). A module of its own, so that etcd's dependencies never move the versions
// kube-apiserver is built with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
