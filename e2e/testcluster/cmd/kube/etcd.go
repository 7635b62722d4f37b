package main

import (
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
)

// newEtcdCommand runs a single-member etcd, embedded, listening on loopback only.
func newEtcdCommand() *cobra.Command {
	var dataDir, clientURL, peerURL string
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run a single-member embedded etcd on loopback",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := embed.NewConfig()
			cfg.Dir = dataDir
			cfg.LogLevel = "warn"
			client, err := url.Parse(clientURL)
			if err != nil {
				return fmt.Errorf("--listen-client-url: %w", err)
			}
			peer, err := url.Parse(peerURL)
			if err != nil {
				return fmt.Errorf("--listen-peer-url: %w", err)
			}
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
			cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
			cfg.InitialCluster = cfg.Name + "=" + peer.String()
			// A test cluster favours speed over durability.
			cfg.UnsafeNoFsync = true
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				return err
			}
			defer e.Close()
			select {
			case <-e.Server.ReadyNotify():
			case <-time.After(60 * time.Second):
				return fmt.Errorf("etcd did not become ready within 60s")
			}
			fmt.Fprintf(os.Stderr, "etcd ready on %s\n", client)
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
			select {
			case err := <-e.Err():
				return err
			case <-stop:
				return nil
			}
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "etcd-data", "directory for etcd's data")
	cmd.Flags().StringVar(&clientURL, "listen-client-url", "http://127.0.0.1:2379", "client URL (loopback)")
	cmd.Flags().StringVar(&peerURL, "listen-peer-url", "http://127.0.0.1:2380", "peer URL (loopback)")
	return cmd
}
