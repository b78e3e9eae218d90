package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type img struct {
	id   string
	tags []string
	env  []string
}

// normalize adds ":latest" to an untagged name, as the client does.
func normalize(ref string) string {
	if strings.HasPrefix(ref, "sha256:") || strings.Contains(ref, "@") {
		return ref
	}
	if !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		return ref + ":latest"
	}
	return ref
}

// findImage resolves an image ID or reference. Caller holds d.mu.
func (d *Docker) findImage(ref string) *img {
	if im, ok := d.images[ref]; ok {
		return im
	}
	ref = normalize(ref)
	for _, im := range d.images {
		if slices.Contains(im.tags, ref) {
			return im
		}
	}
	return nil
}

// addImage tags a new image ref (moving the tag if another image had it).
// Caller holds d.mu.
func (d *Docker) addImage(ref string, env []string) string {
	im := &img{id: "sha256:" + d.newID("image"), env: slices.Clone(env)}
	if ref != "" {
		ref = normalize(ref)
		for _, other := range d.images {
			other.tags = slices.DeleteFunc(other.tags, func(t string) bool { return t == ref })
		}
		im.tags = []string{ref}
	}
	d.images[im.id] = im
	return im.id
}

// AddImage makes image ref local (as a pull or build would), with env as
// its configured environment, and returns its ID.
func (d *Docker) AddImage(ref string, env ...string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addImage(ref, env)
}

// HasImage reports whether the ID or reference is local.
func (d *Docker) HasImage(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.findImage(ref) != nil
}

// ImageInspect returns the image with that ID or reference.
func (d *Docker) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if err := d.begin(ctx, "ImageInspect", ref); err != nil {
		return image.InspectResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	im := d.findImage(ref)
	if im == nil {
		return image.InspectResponse{}, notFound("No such image: %s", ref)
	}
	return image.InspectResponse{ID: im.id, RepoTags: slices.Clone(im.tags),
		Config: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{Env: slices.Clone(im.env)}}}, nil
}

// ImageImport reads a tar archive (an empty or broken one is refused)
// and tags the new image ref.
func (d *Docker) ImageImport(ctx context.Context, src image.ImportSource, ref string, _ image.ImportOptions) (io.ReadCloser, error) {
	if err := d.begin(ctx, "ImageImport", ref); err != nil {
		return nil, err
	}
	if src.Source == nil {
		return nil, invalid("image import: no source")
	}
	data, err := io.ReadAll(src.Source)
	if err != nil {
		return nil, fmt.Errorf("image import: reading source: %w", err)
	}
	if _, err := tar.NewReader(bytes.NewReader(data)).Next(); err != nil {
		return nil, invalid("image import: not a tar archive (%v)", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.addImage(ref, nil)
	return io.NopCloser(strings.NewReader(fmt.Sprintf("{\"status\":%q}\n", id))), nil
}

// ImageList lists local images. Filters: reference (a glob on
// "repo:tag" or "repo"), dangling.
func (d *Docker) ImageList(ctx context.Context, o image.ListOptions) ([]image.Summary, error) {
	if err := d.begin(ctx, "ImageList", ""); err != nil {
		return nil, err
	}
	if err := o.Filters.Validate(map[string]bool{"reference": true, "dangling": true}); err != nil {
		return nil, invalid("%v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []image.Summary
	for _, im := range d.images {
		if o.Filters.Contains("dangling") && o.Filters.ExactMatch("dangling", "true") != (len(im.tags) == 0) {
			continue
		}
		if pats := o.Filters.Get("reference"); len(pats) > 0 && !slices.ContainsFunc(im.tags, func(t string) bool {
			return slices.ContainsFunc(pats, func(p string) bool { return refMatch(p, t) })
		}) {
			continue
		}
		out = append(out, image.Summary{ID: im.id, RepoTags: slices.Clone(im.tags), Containers: -1})
	}
	slices.SortFunc(out, func(a, b image.Summary) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func refMatch(pattern, tag string) bool {
	repo := tag[:strings.LastIndex(tag, ":")]
	ok1, _ := path.Match(pattern, tag)
	ok2, _ := path.Match(pattern, repo)
	return ok1 || ok2
}

// ImageRemove untags ref, deleting the image with its last tag; an image
// a container uses is refused (conflict) unless forced.
func (d *Docker) ImageRemove(ctx context.Context, ref string, o image.RemoveOptions) ([]image.DeleteResponse, error) {
	if err := d.begin(ctx, "ImageRemove", ref); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	im := d.findImage(ref)
	if im == nil {
		return nil, notFound("No such image: %s", ref)
	}
	for _, c := range d.containers {
		if d.findImage(c.Config.Image) == im && !o.Force {
			return nil, conflict("unable to remove repository reference %q (must force) - container %s is using its referenced image %s", ref, c.ID, im.id)
		}
	}
	var out []image.DeleteResponse
	if tag := normalize(ref); slices.Contains(im.tags, tag) {
		im.tags = slices.DeleteFunc(im.tags, func(t string) bool { return t == tag })
		out = append(out, image.DeleteResponse{Untagged: tag})
	} else {
		for _, t := range im.tags {
			out = append(out, image.DeleteResponse{Untagged: t})
		}
		im.tags = nil
	}
	if len(im.tags) == 0 {
		delete(d.images, im.id)
		out = append(out, image.DeleteResponse{Deleted: im.id})
	}
	return out, nil
}
