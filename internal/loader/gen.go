package loader

//go:generate go tool bpf2go -tags linux -target bpfel -type dnms_event -type dnms_stat -type dnms_kind bpf ../../bpf/dnms.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
