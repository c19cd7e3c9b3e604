package faultfs

import "io"

var errUnexpectedEOF = io.ErrUnexpectedEOF
