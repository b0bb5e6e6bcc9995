package edge_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// kubeletVolume imitates the kubelet's atomic writer for a Secret volume: each version is a
// timestamped directory, ..data links to the current one, and each key is a top-level link
// through ..data.
type kubeletVolume struct {
	t       *testing.T
	dir     string
	version int
}

func (v *kubeletVolume) write(data map[string][]byte) {
	t := v.t
	t.Helper()
	v.version++
	versionDir := fmt.Sprintf("..2026_11_27_00_00_00.%d", v.version)
	if err := os.Mkdir(filepath.Join(v.dir, versionDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for key, value := range data {
		if err := os.WriteFile(filepath.Join(v.dir, versionDir, key), value, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The swap: a new link renamed over ..data, as atomic_writer.go does.
	if err := os.Symlink(versionDir, filepath.Join(v.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for key := range data {
		link := filepath.Join(v.dir, key)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", key), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.version > 1 {
		_ = os.RemoveAll(filepath.Join(v.dir, fmt.Sprintf("..2026_11_27_00_00_00.%d", v.version-1)))
	}
}

func TestDirSourceFollowsKubeletVolume(t *testing.T) {
	account := edgetest.NewAccount(t)
	volume := &kubeletVolume{t: t, dir: t.TempDir()}
	volume.write(map[string][]byte{
		v1alpha1.TLSALPN01Key("a.example.com"): account.ChallengeCertificatePEM(t, "token-1", "a.example.com"),
		v1alpha1.HTTP01Key("token-1"):          []byte("token-1.x"),
	})

	store := edge.NewChallengeStore()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		// No resync: the update below must arrive through the file watch.
		done <- (&edge.DirSource{Dir: volume.dir, Store: store, Log: testr.New(t)}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	edgetest.Eventually(t, 10*time.Second, func() error {
		if !store.Synced() {
			return errors.New("not synced")
		}
		if got, _ := store.KeyAuthorization("token-1"); got != "token-1.x" {
			return fmt.Errorf("key authorization %q", got)
		}
		return nil
	})
	if _, ok := store.ChallengeCertificate("a.example.com"); !ok {
		t.Fatal("challenge certificate not loaded")
	}

	// The next version drops a.example.com and token-1, adds b.example.com and token-2.
	volume.write(map[string][]byte{
		v1alpha1.TLSALPN01Key("b.example.com"): account.ChallengeCertificatePEM(t, "token-2", "b.example.com"),
		v1alpha1.HTTP01Key("token-2"):          []byte("token-2.x"),
	})
	edgetest.Eventually(t, 10*time.Second, func() error {
		if _, ok := store.ChallengeCertificate("b.example.com"); !ok {
			return errors.New("b.example.com not loaded")
		}
		if _, ok := store.ChallengeCertificate("a.example.com"); ok {
			return errors.New("a.example.com still served")
		}
		if _, ok := store.KeyAuthorization("token-1"); ok {
			return errors.New("token-1 still served")
		}
		return nil
	})
	if got, _ := store.KeyAuthorization("token-2"); got != "token-2.x" {
		t.Fatalf("key authorization of token-2 %q", got)
	}
}

func TestDirSourcePlainDirectory(t *testing.T) {
	dir := t.TempDir()
	store := edge.NewChallengeStore()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- (&edge.DirSource{Dir: dir, Store: store, Log: testr.New(t)}).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	edgetest.Eventually(t, 10*time.Second, func() error {
		if !store.Synced() {
			return errors.New("empty directory not synced")
		}
		return nil
	})
	if err := os.WriteFile(filepath.Join(dir, v1alpha1.HTTP01Key("tok")), []byte("tok.x"), 0o644); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error {
		if got, _ := store.KeyAuthorization("tok"); got != "tok.x" {
			return fmt.Errorf("key authorization %q", got)
		}
		return nil
	})
	if err := os.Remove(filepath.Join(dir, v1alpha1.HTTP01Key("tok"))); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error {
		if _, ok := store.KeyAuthorization("tok"); ok {
			return errors.New("removed token still served")
		}
		return nil
	})
}

func TestDirSourceMissingDirectory(t *testing.T) {
	source := &edge.DirSource{Dir: filepath.Join(t.TempDir(), "absent"), Store: edge.NewChallengeStore(), Log: testr.New(t)}
	if err := source.Run(t.Context()); err == nil {
		t.Fatal("Run succeeded on a missing directory")
	}
	if source.Store.Synced() {
		t.Fatal("store synced from a missing directory")
	}
}
