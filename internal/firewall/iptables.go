package firewall

import (
	"bufio"
	"fmt"
	"slices"
	"strings"
)

// saveString quotes s as iptables-save prints a string argument
// (xtables_save_string): bare when it is made of letters, digits, '_' and
// '-' only, else in double quotes, with every double quote, single quote
// and backslash escaped by a backslash. A rule weft renders so compares
// equal to the saved one.
func saveString(s string) string {
	bare := s != ""
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

// iptablesRule renders r as the arguments of an iptables rule, in the order
// and quoting iptables-save prints them, so that a saved rule compares
// equal to the one weft would write:
// `-s 10.244.0.0/16 -m comment --comment "weft forward" -j ACCEPT`.
func iptablesRule(r Rule, comment string) (string, error) {
	var a []string
	for _, m := range []struct {
		flag string
		m    Match
	}{{"-s", r.Src}, {"-d", r.Dst}} {
		if !m.m.Prefix.IsValid() {
			continue
		}
		if m.m.Not {
			a = append(a, "!")
		}
		a = append(a, m.flag, m.m.Prefix.Masked().String())
	}
	if r.Mark != 0 {
		a = append(a, "-m", "mark", "--mark", fmt.Sprintf("0x%x/0x%x", r.Mark, r.Mark))
	}
	if comment != "" {
		a = append(a, "-m", "comment", "--comment", saveString(comment))
	}
	switch r.Verdict {
	case VerdictAccept:
		a = append(a, "-j", "ACCEPT")
	case VerdictReturn:
		a = append(a, "-j", "RETURN")
	default: // masquerade belongs to the nat table, which weft leaves alone
		return "", fmt.Errorf("iptables rule %q: verdict %q has no place in the filter table", r, r.Verdict)
	}
	return strings.Join(a, " "), nil
}

// savedFilter is what `iptables-save -t filter` says about weft's chains:
// which WEFT-* chains exist, their rules, and every rule of another chain
// that jumps to one of them. Rules are kept as iptables-save prints them,
// without the leading "-A CHAIN ".
type savedFilter struct {
	chains []string            // WEFT-* chains, in the order declared
	rules  map[string][]string // WEFT-* chain -> its rules
	jumps  map[string][]string // WEFT-* chain -> "-A FROM ..." lines jumping to it from other chains
}

// parseSave reads the output of `iptables-save -t filter`.
func parseSave(out string) savedFilter {
	s := savedFilter{rules: map[string][]string{}, jumps: map[string][]string{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	table := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case table != "filter":
		case strings.HasPrefix(line, ":"+IPTablesPrefix):
			s.chains = append(s.chains, strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			chain := f[1]
			if strings.HasPrefix(chain, IPTablesPrefix) {
				s.rules[chain] = append(s.rules[chain], strings.TrimPrefix(line, "-A "+chain+" "))
				continue
			}
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], IPTablesPrefix) {
					s.jumps[f[i+1]] = append(s.jumps[f[i+1]], line)
				}
			}
		}
	}
	return s
}

// iptablesScript returns the `iptables-restore --noflush` input that turns
// the saved filter table into want (the chains of one family's parts), or
// "" when it already is. Only WEFT-* chains and the jumps to them are
// touched: a chain with the wrong rules is flushed and refilled, a missing
// or duplicated jump is deleted and appended once, at the end of its
// built-in chain (after kube-proxy's, as flannel does); WEFT-* chains that
// no part wants are unhooked, flushed and deleted.
func iptablesScript(want []IPTablesChain, saved savedFilter) (string, error) {
	var decl, del, body, flush, tail []string
	wanted := map[string]bool{}
	for _, c := range want {
		wanted[c.Name] = true
		var rules []string
		for _, r := range c.Rules {
			a, err := iptablesRule(r, c.Comment)
			if err != nil {
				return "", fmt.Errorf("iptables chain %s: %w", c.Name, err)
			}
			rules = append(rules, a)
		}
		exists := slices.Contains(saved.chains, c.Name)
		if !exists {
			decl = append(decl, ":"+c.Name+" - [0:0]")
		}
		if !exists || !slices.Equal(saved.rules[c.Name], rules) {
			if exists {
				body = append(body, "-F "+c.Name)
			}
			for _, r := range rules {
				body = append(body, "-A "+c.Name+" "+r)
			}
		}
		jump := "-A " + c.From + " "
		if c.Comment != "" {
			jump += "-m comment --comment " + saveString(c.Comment) + " "
		}
		jump += "-j " + c.Name
		if have := saved.jumps[c.Name]; !slices.Equal(have, []string{jump}) {
			for _, j := range have {
				del = append(del, "-D"+strings.TrimPrefix(j, "-A"))
			}
			body = append(body, jump)
		}
	}
	for _, name := range saved.chains {
		if wanted[name] {
			continue
		}
		for _, j := range saved.jumps[name] {
			del = append(del, "-D"+strings.TrimPrefix(j, "-A"))
		}
		flush = append(flush, "-F "+name)
		tail = append(tail, "-X "+name) // after every flush: WEFT-* chains may jump to each other
	}
	if len(decl)+len(del)+len(body)+len(flush) == 0 {
		return "", nil
	}
	lines := append([]string{"*filter"}, decl...)
	lines = append(lines, del...)
	lines = append(lines, body...)
	lines = append(lines, flush...)
	lines = append(lines, tail...)
	lines = append(lines, "COMMIT")
	return strings.Join(lines, "\n") + "\n", nil
}
