package main

import (
	"fmt"
	"slices"
	"time"
)

// quantile is the nearest-rank q-quantile (0 < q <= 1) of xs.
func quantile[T int64 | time.Duration](xs []T, q float64) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median[T int64 | time.Duration](xs []T) T { return quantile(xs, 0.5) }
func p99[T int64 | time.Duration](xs []T) T    { return quantile(xs, 0.99) }

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "—"
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ratio[T int64 | time.Duration | int](a, b T) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

func yes(ok bool) string {
	if ok {
		return "**yes**"
	}
	return "**no**"
}
