// kube-apiserver, built from the k8s.io/kubernetes module at the version this module's go.mod
// (or go-<minor>.mod) pins: upstream's own main (cmd/kube-apiserver/apiserver.go), so the
// binary the tests start is the real API server, not a copy of its rules.
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
