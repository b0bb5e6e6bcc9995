package edge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// kubeletDataLink is the symlink through which the kubelet publishes a Secret volume's current
// content. On an update it writes a new timestamped directory and renames a new symlink over
// this one, so everything read through one resolution of it is one version of the Secret.
const kubeletDataLink = "..data"

// DirSource feeds a ChallengeStore from a directory holding the challenge Secret's keys as
// files: the Secret mounted as a volume (without items, so file names are the keys), or any
// directory written the same way.
type DirSource struct {
	Dir   string
	Store *ChallengeStore
	Log   logr.Logger
	// ResyncInterval re-reads the directory at this interval besides reacting to file events, a
	// safety net for changes a watch can miss (the directory replaced as a whole). Zero
	// disables it.
	ResyncInterval time.Duration
}

// Run reads the directory, marks the store synced, and re-reads it on every change until ctx is
// done; it then returns nil. It returns an error when the directory cannot be read or watched
// at start. Later read errors are logged and keep the last good content: a half-swapped
// volume is not a reason to drop challenges the CA may be validating.
func (s *DirSource) Run(ctx context.Context) error {
	if s.Dir == "" || s.Store == nil {
		return errors.New("directory source needs a directory and a store")
	}
	log := s.Log.WithValues("directory", s.Dir)

	// Watch before the first read, so that no change falls between the two.
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching challenge directory: %w", err)
	}
	defer watcher.Close()
	if err := watcher.Add(s.Dir); err != nil {
		return fmt.Errorf("watching challenge directory %s: %w", s.Dir, err)
	}
	if err := s.load(log); err != nil {
		return err
	}
	s.Store.MarkSynced()

	var resync <-chan time.Time
	if s.ResyncInterval > 0 {
		ticker := time.NewTicker(s.ResyncInterval)
		defer ticker.Stop()
		resync = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-watcher.Events:
			if !ok {
				return nil
			}
			// Any event may be part of a swap; reading is cheap and unchanged content is a
			// no-op in the store, so re-read instead of interpreting events.
			if err := s.load(log); err != nil {
				log.Error(err, "Failed to re-read the challenge directory; kept the last content")
			}
		case err, ok := <-watcher.Errors:
			if !ok {
				return nil
			}
			log.Error(err, "Failed to watch the challenge directory")
		case <-resync:
			if err := s.load(log); err != nil {
				log.Error(err, "Failed to re-read the challenge directory; kept the last content")
			}
		}
	}
}

// load reads the directory and replaces the store's content with it.
func (s *DirSource) load(log logr.Logger) error {
	data, err := ReadChallengeDir(s.Dir)
	if err != nil {
		return err
	}
	changed, err := s.Store.Replace(data)
	if !changed {
		return nil
	}
	tlsALPN01, http01 := s.Store.Len()
	log = log.WithValues("tlsALPN01", tlsALPN01, "http01", http01)
	if err != nil {
		log.Error(err, "Loaded the challenge directory with bad entries skipped")
		return nil
	}
	log.Info("Loaded the challenge directory")
	return nil
}

// ReadChallengeDir returns the files of dir as challenge Secret data: file name to content.
// When dir is a kubelet Secret volume it reads one version through the ..data symlink; names
// starting with a dot (the kubelet's own entries) and directories are skipped.
func ReadChallengeDir(dir string) (map[string][]byte, error) {
	root := dir
	if resolved, err := filepath.EvalSymlinks(filepath.Join(dir, kubeletDataLink)); err == nil {
		root = resolved
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading challenge directory: %w", err)
	}
	data := make(map[string][]byte, len(entries))
	for _, entry := range entries {
		name := entry.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(root, name)
		// Stat follows symlinks: the top-level files of a kubelet volume are links into ..data.
		info, err := os.Stat(path)
		if err != nil {
			return nil, fileError(err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return nil, fileError(err)
		}
		data[name] = content
	}
	return data, nil
}

// fileError drops the path from an error about one file: file names are Secret keys, and an
// http-01 key holds a token, which must not reach the logs.
func fileError(err error) error {
	var pathError *fs.PathError
	if errors.As(err, &pathError) {
		err = pathError.Err
	}
	return fmt.Errorf("reading a file of the challenge directory: %w", err)
}
