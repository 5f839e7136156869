package pod

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Protocols a lab pod's port can have, spelled as in corev1.Protocol.
const (
	TCP  = "TCP"
	UDP  = "UDP"
	SCTP = "SCTP" // declared, never served: this kernel has no SCTP
)

// Port is one container port of a pod: a port number and protocol, and
// the name a NetworkPolicy can refer to it by.
type Port struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     uint16 `json:"port"`
}

// PortName is the name the lab gives a port, as cyclonus names its
// containers' ports: "serve-80-tcp".
func PortName(port uint16, protocol string) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(protocol))
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// ParsePorts reads --ports: a comma-separated list of PORT (TCP and UDP)
// or PORT/PROTOCOL (tcp, udp, sctp; any case). Every port gets its
// PortName. "" is no ports.
func ParsePorts(s string) ([]Port, error) {
	var ports []Port
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		num, proto, hasProto := strings.Cut(f, "/")
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--ports %q: %q is not a port (1-65535), PORT/tcp or PORT/udp", s, f)
		}
		protos := []string{TCP, UDP}
		if hasProto {
			p := strings.ToUpper(proto)
			if p != TCP && p != UDP && p != SCTP {
				return nil, fmt.Errorf("--ports %q: protocol %q: use tcp, udp or sctp", s, proto)
			}
			protos = []string{p}
		}
		for _, p := range protos {
			port := Port{Name: PortName(uint16(n), p), Protocol: p, Port: uint16(n)}
			if slices.Contains(ports, port) {
				return nil, fmt.Errorf("--ports %q: %s is given twice", s, port)
			}
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// ValidatePorts checks ports given through the Go API: known protocols,
// no port twice, names that Kubernetes accepts and that are unique; a
// port without a name gets its PortName.
func ValidatePorts(ports []Port) ([]Port, error) {
	out := slices.Clone(ports)
	seen := map[string]bool{}
	for i := range out {
		p := &out[i]
		p.Protocol = strings.ToUpper(p.Protocol)
		if p.Protocol != TCP && p.Protocol != UDP && p.Protocol != SCTP {
			return nil, fmt.Errorf("port %d: protocol %q: use TCP, UDP or SCTP", p.Port, p.Protocol)
		}
		if p.Port == 0 {
			return nil, fmt.Errorf("port %q: number 0", p.Name)
		}
		if p.Name == "" {
			p.Name = PortName(p.Port, p.Protocol)
		}
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			return nil, fmt.Errorf("port %s name %q: %s", p, p.Name, strings.Join(errs, "; "))
		}
		if seen[p.Name] || seen[p.String()] {
			return nil, fmt.Errorf("port %s (%s) is given twice", p, p.Name)
		}
		seen[p.Name], seen[p.String()] = true, true
	}
	return out, nil
}

// ParseLabels reads --labels: k=v,k2=v2, keys and values as Kubernetes
// accepts them. "" is no labels.
func ParseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	set, err := labels.ConvertSelectorToLabelsMap(s)
	if err != nil {
		return nil, fmt.Errorf("--labels %q: %w (give k=v,k2=v2)", s, err)
	}
	if n := len(strings.Split(s, ",")); n != len(set) {
		return nil, fmt.Errorf("--labels %q: a key is given twice", s)
	}
	return set, nil
}

// ValidateName checks a pod's name and namespace as the API server would:
// a namespace is a DNS label, a pod name a DNS subdomain.
func ValidateName(namespace, name string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("pod name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// NetNS is the network namespace of pod namespace/name in lab: LAB-NAME
// in the default namespace (n1-p1 is weft-n1-p1, as always), else
// LAB-NAMESPACE_NAME ('_' appears in no Kubernetes name, so the two never
// meet).
func NetNS(lab, namespace, name string) string {
	if namespace == "" || namespace == DefaultNamespace {
		return lab + "-" + name
	}
	return lab + "-" + namespace + "_" + name
}
