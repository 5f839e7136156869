# The weft image: the agent (/weft) and the CNI plugin (/opt/weft/weft-cni),
# static binaries on a distroless base. deploy/weft.yaml runs it.
#   docker build -t ghcr.io/weftnet/weft:latest .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/weft ./cmd/weft && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/weft-cni ./cmd/weft-cni

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/weft /weft
COPY --from=build /out/weft-cni /opt/weft/weft-cni
ENTRYPOINT ["/weft"]
