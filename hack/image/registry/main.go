// Command registry serves an OCI distribution registry over plain HTTP (go-containerregistry's
// in-process pkg/registry, blobs on disk) and pushes into it the images of OCI image layout
// tarballs that hack/image wrote. The single-node cluster (internal/testcluster) runs it on the
// bridge address, where the node's containerd pulls from it; it serves until SIGTERM or SIGINT.
//
//	registry --listen 10.213.0.1:5000 --blobs DIR --push bin/image/certpilot.tar ... [--ready FILE]
//
// An image is pushed under the name hack/image gave it, without its registry: certpilot:dev
// (docker.io/library/certpilot:dev) becomes LISTEN/certpilot:dev. Once every image is pushed, it
// creates the --ready file.
package main

import (
	"archive/tar"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var push list
	listen := flag.String("listen", "127.0.0.1:5000", "host:port to serve the registry on (plain HTTP)")
	blobs := flag.String("blobs", "", "directory for the blobs (default: in memory)")
	flag.Var(&push, "push", "an OCI image layout tarball whose images to push once serving (repeatable)")
	ready := flag.String("ready", "", "a file to create once every image is pushed")
	flag.Parse()
	if err := run(*listen, *blobs, *ready, push); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

func run(listen, blobs, ready string, push []string) error {
	var opts []registry.Option
	if blobs != "" {
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			return err
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)))
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: registry.New(opts...), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()
	for _, tarball := range push {
		if err := pushTarball(l.Addr().String(), tarball); err != nil {
			server.Close()
			return err
		}
	}
	log.Printf("serving on http://%s", l.Addr())
	if ready != "" {
		if err := os.WriteFile(ready, []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			server.Close()
			return err
		}
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-served:
		return err
	case <-stop:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return server.Shutdown(ctx)
	}
}

// pushTarball pushes every image of an OCI image layout tarball to the registry at addr, named
// by its io.containerd.image.name annotation without the registry.
func pushTarball(addr, tarball string) error {
	dir, err := os.MkdirTemp("", "registry-push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := untar(tarball, dir); err != nil {
		return fmt.Errorf("%s: %w", tarball, err)
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", tarball, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return err
	}
	if len(manifest.Manifests) == 0 {
		return fmt.Errorf("%s holds no image", tarball)
	}
	for _, desc := range manifest.Manifests {
		full := desc.Annotations["io.containerd.image.name"]
		if full == "" {
			return fmt.Errorf("%s: image %s has no io.containerd.image.name annotation", tarball, desc.Digest)
		}
		tag, err := name.NewTag(full)
		if err != nil {
			return err
		}
		repo := strings.TrimPrefix(tag.RepositoryStr(), "library/")
		dest, err := name.NewTag(addr+"/"+repo+":"+tag.TagStr(), name.Insecure)
		if err != nil {
			return err
		}
		img, err := index.Image(desc.Digest)
		if err != nil {
			return err
		}
		if err := remote.Write(dest, img); err != nil {
			return fmt.Errorf("pushing %s: %w", dest, err)
		}
		log.Printf("pushed %s@%s", dest, desc.Digest)
	}
	return nil
}

// untar extracts the regular files and directories of a tarball into dir.
func untar(tarball, dir string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			return fmt.Errorf("entry %q leaves the directory", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if closeErr := out.Close(); err == nil {
				err = closeErr
			}
			if err != nil {
				return err
			}
		}
	}
}
