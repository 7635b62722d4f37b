package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// The fake node's kubelet API is KWOK's own server on 127.0.0.1, where the API server
// reaches it for `kubectl logs`. Every container of every fake pod logs the same file,
// <dir>/pod.log, written here.

// The lines of the pod log. It starts with podLogStarted and podLogListening and ends in
// heartbeats, two of them from the start, so `kubectl logs --tail=2` always prints two
// heartbeats; one more is appended every heartbeatInterval, for `kubectl logs -f` to stream.
const (
	podLogStarted     = "guildnet test workload started"
	podLogListening   = "guildnet test workload listening on 0.0.0.0:8080"
	podLogHeartbeat   = "guildnet test workload heartbeat"
	heartbeatInterval = time.Second
)

// criLine is one log line as container runtimes write them, the format KWOK reads.
func criLine(t time.Time, msg string) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " stdout F " + msg + "\n"
}

// writePodLog writes the pod log's first lines, and the KWOK configuration that serves
// that file as the log of every container: generated, as the file is this cluster's own.
func writePodLog(d clusterDirs) error {
	now := time.Now()
	var log strings.Builder
	for _, line := range []string{podLogStarted, podLogListening, podLogHeartbeat, podLogHeartbeat} {
		log.WriteString(criLine(now, line))
	}
	if err := os.WriteFile(d.podLog(), []byte(log.String()), 0o644); err != nil {
		return err
	}
	// JSON quoting makes any path a valid YAML string.
	path, err := json.Marshal(d.podLog())
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: guildnet-pod-log
spec:
  logs:
  - logsFile: %s
    follow: true
`, path)
	return os.WriteFile(d.kwokConfig(), []byte(config), 0o644)
}

// appendHeartbeats appends a heartbeat to the pod log every heartbeatInterval until ctx
// ends.
func appendHeartbeats(ctx context.Context, d clusterDirs) {
	f, err := os.OpenFile(d.podLog(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Printf("pod log: %v\n", err)
		return
	}
	defer f.Close()
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if _, err := f.WriteString(criLine(now, podLogHeartbeat)); err != nil {
				fmt.Printf("pod log: %v\n", err)
				return
			}
		}
	}
}
