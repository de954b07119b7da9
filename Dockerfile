# syntax=docker/dockerfile:1
#
# Two targets:
#   development  go run with the embedded dev identity provider (never for production)
#                docker build --target development -t mcpguard:dev .
#                docker run --rm -p 8000:8000 -v "$PWD":/src mcpguard:dev
#                token: go run ./cmd/mcpguard token --dev --user alice   (on the host, with the mount)
#                   or: docker exec <container> go run ./cmd/mcpguard token --dev --user alice
#   production   static binary on distroless, non-root (the default target; `make docker`)
#                docker build --target production -t mcpguard:latest .
#                docker run --rm -p 8000:8000 --env-file .env mcpguard:latest
#                (policies are baked in at /app/policies; mount your own there to replace them)

ARG GO_VERSION=1.26

# ---- source and modules, shared by the development and builder stages
FROM golang:${GO_VERSION} AS source
WORKDIR /src
ENV GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN go mod download
COPY . .

# ---- development: serves on 0.0.0.0:8000; the dev IdP stays on 127.0.0.1:8001 inside the
# container (DEV_IDP_ADDR must be loopback; only the server itself fetches its keys).
FROM source AS development
ENV ENVIRONMENT=development \
    DEV_IDP=true \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=text
EXPOSE 8000
CMD ["go", "run", "./cmd/mcpguard", "serve"]

# ---- builder: a static, reproducible binary
FROM source AS builder
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/mcpguard/mcpguard/internal/server.Version=${VERSION}" \
      -o /out/mcpguard ./cmd/mcpguard

# ---- production
FROM gcr.io/distroless/static-debian12:nonroot AS production
WORKDIR /app
COPY --from=builder /out/mcpguard /app/mcpguard
COPY policies/ /app/policies/
# Metrics on their own port, for the cluster's scraper; keep 9464 off any
# public ingress (metrics need no token).
ENV ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    METRICS_ADDR=0.0.0.0:9464
USER nonroot
EXPOSE 8000 9464
ENTRYPOINT ["/app/mcpguard"]
CMD ["serve"]
