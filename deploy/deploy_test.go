package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestDaemonSetRunsTheImage: every container of the DaemonSet runs a binary
// that the Dockerfile puts into the image, and that binary accepts the
// container's arguments. The image is not built here; the binaries are,
// from the package the Dockerfile builds each one from.
func TestDaemonSetRunsTheImage(t *testing.T) {
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		if d, ok := o.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	if ds == nil {
		t.Fatal("deploy/weft.yaml has no DaemonSet")
	}
	// In the image: path -> the package built into it.
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]string{} // /out/NAME -> ./cmd/NAME
	for _, m := range regexp.MustCompile(`-o (/out/\S+) (\./cmd/\S+)`).FindAllStringSubmatch(string(df), -1) {
		built[m[1]] = m[2]
	}
	image := map[string]string{} // path in the image -> ./cmd/NAME
	for _, m := range regexp.MustCompile(`(?m)^COPY --from=build (\S+) (\S+)$`).FindAllStringSubmatch(string(df), -1) {
		if pkg, ok := built[m[1]]; ok {
			image[m[2]] = pkg
		}
	}
	if len(image) == 0 {
		t.Fatal("found no binaries copied into the image in the Dockerfile")
	}
	bins := map[string]string{} // ./cmd/NAME -> built binary
	dir := t.TempDir()
	containers := append(append([]corev1.Container{}, ds.Spec.Template.Spec.InitContainers...), ds.Spec.Template.Spec.Containers...)
	for _, c := range containers {
		if len(c.Command) == 0 {
			t.Errorf("container %s has no command", c.Name)
			continue
		}
		pkg, ok := image[c.Command[0]]
		if !ok {
			t.Errorf("container %s runs %s, which the Dockerfile does not put into the image (%v)", c.Name, c.Command[0], image)
			continue
		}
		bin, ok := bins[pkg]
		if !ok {
			bin = filepath.Join(dir, filepath.Base(pkg))
			if out, err := exec.Command("go", "build", "-o", bin, "../"+strings.TrimPrefix(pkg, "./")).CombinedOutput(); err != nil {
				t.Fatalf("build %s: %v\n%s", pkg, err, out)
			}
			bins[pkg] = bin
		}
		// -h after the container's arguments: the binary parses them all,
		// then prints its usage and stops without doing anything. A flag
		// it does not know, or a bad value, is reported before.
		args := append(append([]string{}, c.Command[1:]...), c.Args...)
		out, _ := exec.Command(bin, append(args, "-h")...).CombinedOutput()
		if s := string(out); !strings.HasPrefix(s, "Usage of ") {
			t.Errorf("container %s: %s refuses %q:\n%s", c.Name, c.Command[0], args, s)
		}
	}
}

// TestRoles: both ClusterRoles let the agent watch what NetworkPolicy
// needs, and the read-only one permits reading and nothing more.
func TestRoles(t *testing.T) {
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]*rbacv1.ClusterRole{}
	for _, o := range objs {
		if r, ok := o.(*rbacv1.ClusterRole); ok {
			roles[r.Name] = r
		}
	}
	allows := func(r *rbacv1.ClusterRole, group, resource, verb string) bool {
		for _, rule := range r.Rules {
			if slices.Contains(rule.APIGroups, group) && slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, name := range []string{"weft", "weft-read-only"} {
		r := roles[name]
		if r == nil {
			t.Fatalf("no ClusterRole %s", name)
		}
		for _, gr := range [][2]string{{"", "nodes"}, {"", "pods"}, {"", "namespaces"}, {"networking.k8s.io", "networkpolicies"}} {
			for _, verb := range []string{"get", "list", "watch"} {
				if !allows(r, gr[0], gr[1], verb) {
					t.Errorf("ClusterRole %s does not allow %s on %s", name, verb, strings.TrimPrefix(gr[0]+"/"+gr[1], "/"))
				}
			}
		}
	}
	for _, rule := range roles["weft-read-only"].Rules {
		for _, verb := range rule.Verbs {
			if verb != "get" && verb != "list" && verb != "watch" {
				t.Errorf("the read-only role allows %s on %v", verb, rule.Resources)
			}
		}
	}
}
