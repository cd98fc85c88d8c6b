package loader

// bpf/dnms.c → bpf_bpfel.o (embedded) and bpf_bpfel.go, both committed so
// that `go build` needs no clang. Regenerate with `make generate`, i.e.
// `go generate ./internal/loader` (needs clang ≥ 14, libbpf-dev for
// <bpf/bpf_helpers.h> and gcc-multilib or linux-libc-dev for <asm/types.h>).
// The output does not depend on the checkout path.

//go:generate go tool bpf2go -tags linux -target bpfel -type dnms_event -type dnms_stat -type dnms_kind -type dnms_target_key bpf ../../bpf/dnms.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
