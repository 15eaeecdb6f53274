package lease

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Name is the object name of the lease of subnet in network. It is a pure
// function of the two, which is what makes the API server's name uniqueness
// the guard against two nodes taking one slice: whoever creates the object
// first holds the slice, every later Create of the same slice fails with
// AlreadyExists. The slice part ("10-240-16-0-24") never contains a dot, so
// the name stays unambiguous for network names with dots.
func Name(network string, subnet netip.Prefix) string {
	return nameSegment(network) + "." + sliceSegment(subnet)
}

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelValue   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	notDNS       = regexp.MustCompile(`[^a-z0-9]+`)
)

func sliceSegment(subnet netip.Prefix) string {
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(subnet.Masked().String())
}

// nameSegment is the network name where it is a valid object name prefix
// (CNI allows upper case and '_', Kubernetes names do not); otherwise a
// readable lower-case form plus a hash of the real name, so that distinct
// networks keep distinct names.
func nameSegment(network string) string {
	if len(network) <= 200 && dnsSubdomain.MatchString(network) {
		return network
	}
	return hashed(strings.Trim(notDNS.ReplaceAllString(strings.ToLower(network), "-"), "-"), network)
}

// LabelValue is s where it is a valid label value, else a hash of it (node
// names may be longer than the 63 characters a label value allows). The
// spec always holds the real value; labels only narrow down List calls.
func LabelValue(s string) string {
	if len(s) <= 63 && labelValue.MatchString(s) {
		return s
	}
	return hashed("", s)
}

func hashed(readable, s string) string {
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])[:16]
	if len(readable) > 40 {
		readable = strings.TrimRight(readable[:40], "-")
	}
	if readable == "" {
		return "h-" + h
	}
	return readable + "-" + h
}

// ExhaustedError says a pool has no free slice left.
type ExhaustedError struct {
	Network string
	Node    string
	Pool    netip.Prefix
	Size    int
	Leased  int // leases of the network inside the pool
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("network %q: pool %s has no free /%d slice left for node %q (%d of %s slices leased): "+
		"enlarge nodeSubnets.pool, use a longer nodeSubnets.size, or delete the SubnetLeases of nodes that are gone "+
		"(kubectl get subnetleases -l %s=%s)",
		e.Network, e.Pool, e.Size, e.Node, e.Leased, SliceCount(e.Pool, e.Size), LabelNetwork, LabelValue(e.Network))
}

// SliceCount is the number of /size slices of pool, as text (it can exceed
// any integer type for IPv6 pools).
func SliceCount(pool netip.Prefix, size int) string {
	n := size - pool.Bits()
	switch {
	case n < 0:
		return "0"
	case n < 63:
		return fmt.Sprint(uint64(1) << n)
	default:
		return fmt.Sprintf("2^%d", n)
	}
}

// FirstFree returns the first slice of length size of pool, in address
// order, that overlaps none of used. It is deterministic: the same pool and
// leases always give the same slice, so a node's slice is predictable and a
// human can tell which one the next node gets. Used prefixes of the other
// family or outside the pool are ignored; a used prefix of another length (a
// lease from before the network's size changed) blocks every slice it
// overlaps. ok is false when the pool is full.
func FirstFree(pool netip.Prefix, size int, used []netip.Prefix) (netip.Prefix, bool) {
	pool = pool.Masked()
	width := pool.Addr().BitLen()
	if size < pool.Bits() || size > width {
		return netip.Prefix{}, false
	}
	poolStart, poolEnd := bounds(pool)
	step := one.shl(uint(width - size))
	var spans [][2]u128
	for _, u := range used {
		if !u.IsValid() || u.Addr().Is4() != pool.Addr().Is4() || !u.Overlaps(pool) {
			continue
		}
		s, e := bounds(u.Masked())
		spans = append(spans, [2]u128{s, e})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0].less(spans[j][0]) })

	c := poolStart
	for _, sp := range spans {
		last := c.add(step).sub(one) // last address of candidate c
		if sp[1].less(c) {
			continue // ends before the candidate
		}
		if last.less(sp[0]) {
			break // starts after the candidate: c is free
		}
		// Overlap: the next candidate is the first aligned one after sp.
		if !sp[1].less(poolEnd) {
			return netip.Prefix{}, false
		}
		next := sp[1].add(one).alignUp(step)
		if next.less(sp[1]) {
			return netip.Prefix{}, false // wrapped past the top of the address space
		}
		c = next
	}
	if poolEnd.less(c.add(step).sub(one)) || c.less(poolStart) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(c.addr(pool.Addr().Is4()), size), true
}

// Choose returns the slice to lease: prefer if it is a free slice of
// length size of pool (the slice a node had before it lost its lease: its
// pods still use its addresses), else FirstFree. An invalid prefer (zero)
// means no preference.
func Choose(pool netip.Prefix, size int, prefer netip.Prefix, used []netip.Prefix) (netip.Prefix, bool) {
	if isSliceOf(prefer, pool, size) && !slices.ContainsFunc(used, prefer.Overlaps) {
		return prefer, true
	}
	return FirstFree(pool, size, used)
}

// isSliceOf reports whether p is an aligned slice of length size of pool.
func isSliceOf(p, pool netip.Prefix, size int) bool {
	return p.IsValid() && p == p.Masked() && p.Bits() == size && size >= pool.Bits() && pool.Masked().Contains(p.Addr())
}

// u128 is an address as a 128-bit number (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

var one = u128{0, 1}

func fromAddr(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var u u128
	for i := 0; i < 8; i++ {
		u.hi = u.hi<<8 | uint64(b[i])
		u.lo = u.lo<<8 | uint64(b[8+i])
	}
	return u
}

func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		return netip.AddrFrom4([4]byte{byte(u.lo >> 24), byte(u.lo >> 16), byte(u.lo >> 8), byte(u.lo)})
	}
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[7-i] = byte(u.hi >> (8 * i))
		b[15-i] = byte(u.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

// bounds are the first and last address of p.
func bounds(p netip.Prefix) (u128, u128) {
	start := fromAddr(p.Addr())
	hostBits := uint(p.Addr().BitLen() - p.Bits())
	return start, start.add(one.shl(hostBits)).sub(one)
}

func (u u128) add(v u128) u128 {
	lo, carry := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, carry)
	return u128{hi, lo}
}

func (u u128) sub(v u128) u128 {
	lo, borrow := bits.Sub64(u.lo, v.lo, 0)
	hi, _ := bits.Sub64(u.hi, v.hi, borrow)
	return u128{hi, lo}
}

func (u u128) shl(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{u.lo << (n - 64), 0}
	case n == 0:
		return u
	default:
		return u128{u.hi<<n | u.lo>>(64-n), u.lo << n}
	}
}

func (u u128) less(v u128) bool { return u.hi < v.hi || (u.hi == v.hi && u.lo < v.lo) }

// alignUp rounds u up to a multiple of step (a power of two). The result
// wraps to zero past the top of the address space; FirstFree checks for it.
func (u u128) alignUp(step u128) u128 {
	mask := step.sub(one)
	v := u.add(mask)
	return u128{v.hi &^ mask.hi, v.lo &^ mask.lo}
}
