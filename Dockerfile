# The weft image: the node agent (/weft-agent), its BGP speaker (/weft-bgp,
# which the agent starts from beside itself when BGP is on) and the CNI
# plugin (/opt/weft/weft-cni, which also installs itself: weft-cni install),
# static binaries on Debian with iptables and nft. deploy/weft.yaml runs it.
#   docker build -t ghcr.io/weftnet/weft:latest .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/weft-agent ./cmd/weft-agent && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/weft-bgp ./cmd/weft-bgp && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/weft-cni ./cmd/weft-cni

# Not distroless: the agent runs the iptables binaries to put its forward
# accepts into iptables' FORWARD chain (--iptables-forward-rules, as flannel
# does), where a DROP policy such as Docker's would otherwise drop pod
# traffic. Debian's iptables writes through nf_tables (iptables-nft). The
# NetworkPolicy rule set is applied in one transaction by the nft binary
# (sigs.k8s.io/knftables), from Debian's nftables.
FROM debian:bookworm-slim
RUN apt-get update && \
    apt-get install -y --no-install-recommends iptables nftables && \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /out/weft-agent /weft-agent
COPY --from=build /out/weft-bgp /weft-bgp
COPY --from=build /out/weft-cni /opt/weft/weft-cni
ENTRYPOINT ["/weft-agent"]
