# Multi-stage build of certpilot's static, non-root image: the manager (entrypoint) and the edge
# (run it with `command: ["/edge"]`). The kubectl plugin is a client tool: `make plugin`.
# `make docker-build` (needs a Docker engine). `make image` writes the same layout without one
# (docs/cluster.md).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN go build -trimpath -ldflags='-s -w' -o /out/manager . && \
    go build -trimpath -ldflags='-s -w' -o /out/edge ./cmd/edge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/manager /out/edge /
USER 65532:65532
ENTRYPOINT ["/manager"]
