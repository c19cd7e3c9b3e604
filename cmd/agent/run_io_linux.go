package main

import (
	"bytes"
	"os"
	"strconv"
)

// ioReadBytes is the bytes this process caused to be fetched from storage (/proc/self/io read_bytes;
// direct reads count, page cache hits do not), or -1 if unknown.
func ioReadBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("read_bytes: ")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
