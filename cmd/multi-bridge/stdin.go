package main

import (
	"fmt"
	"io"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// boundStdin refuses a configuration over limit bytes without reading more
// than limit+1 of it: skel reads stdin to the end, however long. What was
// read becomes stdin again (an in-memory file on fd 0) for skel to read.
func boundStdin(limit int) *types.Error {
	if cmd := os.Getenv("CNI_COMMAND"); cmd == "" || cmd == "VERSION" {
		return nil // skel reads no configuration for these
	}
	data, err := io.ReadAll(io.LimitReader(os.Stdin, int64(limit)+1))
	if err != nil {
		return types.NewError(types.ErrIOFailure, "reading the network configuration from stdin: "+err.Error(), "")
	}
	if len(data) > limit {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("network configuration on stdin is over the limit of %d bytes (1 MiB)", limit),
			"shorten the NetworkAttachmentDefinition's spec.config")
	}
	fd, err := unix.MemfdCreate("cni-stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "buffering stdin: "+err.Error(), "")
	}
	defer unix.Close(fd)
	for written := 0; written < len(data); {
		n, err := unix.Write(fd, data[written:])
		if err != nil {
			return types.NewError(types.ErrIOFailure, "buffering stdin: "+err.Error(), "")
		}
		written += n
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return types.NewError(types.ErrIOFailure, "buffering stdin: "+err.Error(), "")
	}
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return types.NewError(types.ErrIOFailure, "buffering stdin: "+err.Error(), "")
	}
	return nil
}
