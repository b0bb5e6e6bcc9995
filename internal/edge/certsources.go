package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// Names of the certificate sets in a CertificateStore.
const (
	certificateSetSecrets = "secrets"
	certificateSetFiles   = "files"
	// CertificateSetEnvironment is the set of the SSL_CERTS variable.
	CertificateSetEnvironment = "environment"
)

// CertificateDirSource feeds a CertificateStore from directories: each is a mounted
// certificate Secret (tls.crt and tls.key, or bundle.pem, read through the kubelet's ..data
// link so that one read sees one version) or a directory of PEM bundles (*.pem files holding a
// key and its chain). It re-reads them on file events and every ResyncInterval.
type CertificateDirSource struct {
	Dirs           []string
	Store          *CertificateStore
	Log            logr.Logger
	ResyncInterval time.Duration
}

// NewCertificateDirSource returns a source of the certificates in dirs and registers it with
// store, so that store is not Synced before the source has read them.
func NewCertificateDirSource(dirs []string, resync time.Duration, store *CertificateStore, log logr.Logger) *CertificateDirSource {
	store.Expect(certificateSetFiles)
	return &CertificateDirSource{Dirs: dirs, Store: store, Log: log, ResyncInterval: resync}
}

// Run loads the directories, then reloads them on changes until ctx is done. It fails at
// start when a directory cannot be read or watched.
func (s *CertificateDirSource) Run(ctx context.Context) error {
	if len(s.Dirs) == 0 || s.Store == nil {
		return errors.New("certificate directory source needs directories and a store")
	}
	s.Store.Expect(certificateSetFiles)
	var previous []*tls.Certificate
	loaded := false
	lastGood := map[string][]*tls.Certificate{}
	load := func() error {
		var certificates []*tls.Certificate
		for _, dir := range s.Dirs {
			found, err := ReadCertificateDir(dir)
			var unreadable *dirError
			if errors.As(err, &unreadable) {
				// A directory in the middle of a swap, or gone: keep the last good state.
				return err
			}
			if err != nil {
				s.Log.Error(err, "Skipped bad certificate files", "directory", dir)
				if len(found) == 0 {
					// Nothing good in it now: keep serving what it held before, as the
					// Secret source does for a Secret that stops parsing.
					found = lastGood[dir]
				}
			}
			lastGood[dir] = found
			certificates = append(certificates, found...)
		}
		if loaded && sameCertificates(previous, certificates) {
			return nil
		}
		previous, loaded = certificates, true
		s.Store.Replace(certificateSetFiles, certificates)
		s.Log.Info("Loaded the certificate directories", "certificates", len(certificates))
		return nil
	}
	return watchDirs(ctx, s.Dirs, s.ResyncInterval, load, s.Log)
}

// ReadCertificateDir returns the certificates of dir: the one of a mounted certificate Secret
// (tls.crt and tls.key, or bundle.pem), or else one per *.pem bundle file. Bad files are
// reported in the error; the good certificates are returned.
func ReadCertificateDir(dir string) ([]*tls.Certificate, error) {
	files, err := ReadChallengeDir(dir)
	if err != nil {
		return nil, &dirError{err}
	}
	certificate, ok, err := certificateFromFiles(files)
	if ok {
		if err != nil {
			return nil, err
		}
		return []*tls.Certificate{certificate}, nil
	}
	var certificates []*tls.Certificate
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(strings.ToLower(name), ".pem") {
			continue
		}
		certificate, err := ParseBundle(files[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		certificates = append(certificates, certificate)
	}
	return certificates, errors.Join(errs...)
}

// watchDirs calls load once (its error is fatal then), then again on every file event in dirs
// and every resync interval (0: never), until ctx is done. Later errors are logged: load keeps
// the last good state. Reading on any event instead of interpreting events handles the
// kubelet's ..data swap, editors' rename-over and plain writes alike.
func watchDirs(ctx context.Context, dirs []string, resync time.Duration, load func() error, log logr.Logger) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching directories: %w", err)
	}
	defer watcher.Close()
	for _, dir := range dirs {
		if err := watcher.Add(dir); err != nil {
			return fmt.Errorf("watching %s: %w", dir, err)
		}
	}
	if err := load(); err != nil {
		return err
	}
	var tick <-chan time.Time
	if resync > 0 {
		ticker := time.NewTicker(resync)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-watcher.Events:
			if !ok {
				return nil
			}
		case err, ok := <-watcher.Errors:
			if !ok {
				return nil
			}
			log.Error(err, "Failed to watch a directory")
			continue
		case <-tick:
		}
		if err := load(); err != nil {
			log.Error(err, "Failed to reload; kept the last good content")
		}
	}
}

// dirError is a directory that could not be read at all, as opposed to bad files in it.
type dirError struct{ err error }

func (e *dirError) Error() string { return e.err.Error() }
func (e *dirError) Unwrap() error { return e.err }
