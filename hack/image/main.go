// Command image writes a container image as an OCI image layout tarball, with no container
// engine: one reproducible layer holding the given static binaries, the passwd and group files of
// the non-root user 65532 and, with --roots, the trusted roots at the path Go reads on Linux
// (/etc/ssl/certs/ca-certificates.crt). It is the layout of the Dockerfile's
// distroless/static:nonroot image. `make image` runs it for certpilot (/manager, /edge); the
// single-node cluster (test/cluster) runs it for its sandbox image (/pause).
//
// Every timestamp is the Unix epoch, entries are sorted and owned by fixed ids, so the same
// binaries always give the same digest. The image is named with the
// io.containerd.image.name annotation, which `ctr images import` reads.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The non-root user of distroless/static:nonroot.
const (
	uid = 65532
	gid = 65532
)

type binaries map[string]string

func (b binaries) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binaries) Set(v string) error {
	in, src, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(in, "/") {
		return fmt.Errorf("want /path/in/image=local/file, got %q", v)
	}
	b[in] = src
	return nil
}

func main() {
	bins := binaries{}
	flag.Var(bins, "binary", "a file of the image, /path/in/image=local/file (repeatable)")
	ref := flag.String("name", "certpilot:dev", "image name, as `ctr images import` records it")
	entrypoint := flag.String("entrypoint", "/manager", "the image's entrypoint")
	roots := flag.Bool("roots", true, "add the trusted roots at /etc/ssl/certs/ca-certificates.crt")
	out := flag.String("out", "", "the OCI image layout tarball to write")
	flag.Parse()
	if *out == "" || len(bins) == 0 {
		fmt.Fprintln(os.Stderr, "usage: image --binary /manager=bin/manager ... --name certpilot:dev --out bin/image/certpilot.tar")
		os.Exit(2)
	}
	digest, err := build(bins, *ref, *entrypoint, *roots, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s %s\n", *out, *ref, digest)
}

func build(bins binaries, ref, entrypoint string, roots bool, out string) (v1.Hash, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	files, err := rootfs(bins, roots)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(files)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return v1.Hash{}, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, gid),
		Entrypoint: []string{entrypoint},
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
	}
	if roots {
		cfg.Config.Env = append(cfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}

	dir, err := os.MkdirTemp(filepath.Dir(out), ".layout-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          containerdName(tag),
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return v1.Hash{}, err
	}
	return digest, tarDir(dir, out)
}

// containerdName is the name as containerd (and the kubelet through it) normalizes it:
// certpilot:dev is docker.io/library/certpilot:dev.
func containerdName(tag name.Tag) string {
	registry := tag.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + tag.RepositoryStr() + ":" + tag.TagStr()
}

// rootfs is the image's one layer: directories, the user files, the roots and the binaries.
func rootfs(bins binaries, roots bool) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	var entries []entry
	dir := func(path string, mode int64, owner int) {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, Uid: owner, Gid: owner}})
	}
	file := func(path string, mode int64, body []byte) {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(body))}, body: body})
	}
	dir("etc", 0o755, 0)
	dir("home", 0o755, 0)
	dir("home/nonroot", 0o700, uid)
	dir("tmp", 0o1777, 0)
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)))
	file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n"+fmt.Sprintf("nonroot:x:%d:\n", gid)))
	if roots {
		pemRoots, err := trustedRoots()
		if err != nil {
			return nil, err
		}
		dir("etc/ssl", 0o755, 0)
		dir("etc/ssl/certs", 0o755, 0)
		file("etc/ssl/certs/ca-certificates.crt", 0o644, pemRoots)
	}
	for in, src := range bins {
		body, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		file(strings.TrimPrefix(in, "/"), 0o755, body)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		e.hdr.ModTime = time.Unix(0, 0)
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// trustedRoots is the Mozilla NSS root store as golang.org/x/crypto/x509roots/fallback pins it
// (go.mod of this module), as PEM. Roots that NSS constrains (distrust after a date) are left
// out: a PEM file cannot carry the constraint, and trusting them without it would trust more
// than NSS does.
func trustedRoots() ([]byte, error) {
	var buf bytes.Buffer
	n := 0
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		if _, err := x509.ParseCertificate(root.Certificate); err != nil {
			return nil, err
		}
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("no trusted roots in the bundle")
	}
	return buf.Bytes(), nil
}

// tarDir writes the layout directory as a tar with sorted entries and epoch timestamps.
func tarDir(dir, out string) error {
	var paths []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Mode: 0o644, Format: tar.FormatPAX}
		if info.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		body, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, body)
		body.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
