package gguf

import (
	"fmt"
	"strings"
)

// Type is a tensor element type, numbered as ggml_type in ggml 0.27.0 (llama.cpp b11669). The numbers
// are part of the file format: never renumber.
type Type uint32

// Tensor types ggml b11669 can read from a GGUF file. Numbers 4, 5, 31–33 and 36–38 belonged to types
// that ggml removed; files that still use them are rejected.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
	TypeNVFP4   Type = 40
	TypeQ1_0    Type = 41
	TypeQ2_0    Type = 42
)

type typeTraits struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
}

// typeTable was checked against ggml_type_name, ggml_blck_size and ggml_type_size of ggml 0.27.0.
var typeTable = map[Type]typeTraits{
	TypeF32:     {"F32", 1, 4},
	TypeF16:     {"F16", 1, 2},
	TypeQ4_0:    {"Q4_0", 32, 18},
	TypeQ4_1:    {"Q4_1", 32, 20},
	TypeQ5_0:    {"Q5_0", 32, 22},
	TypeQ5_1:    {"Q5_1", 32, 24},
	TypeQ8_0:    {"Q8_0", 32, 34},
	TypeQ8_1:    {"Q8_1", 32, 36},
	TypeQ2_K:    {"Q2_K", 256, 84},
	TypeQ3_K:    {"Q3_K", 256, 110},
	TypeQ4_K:    {"Q4_K", 256, 144},
	TypeQ5_K:    {"Q5_K", 256, 176},
	TypeQ6_K:    {"Q6_K", 256, 210},
	TypeQ8_K:    {"Q8_K", 256, 292},
	TypeIQ2_XXS: {"IQ2_XXS", 256, 66},
	TypeIQ2_XS:  {"IQ2_XS", 256, 74},
	TypeIQ3_XXS: {"IQ3_XXS", 256, 98},
	TypeIQ1_S:   {"IQ1_S", 256, 50},
	TypeIQ4_NL:  {"IQ4_NL", 32, 18},
	TypeIQ3_S:   {"IQ3_S", 256, 110},
	TypeIQ2_S:   {"IQ2_S", 256, 82},
	TypeIQ4_XS:  {"IQ4_XS", 256, 136},
	TypeI8:      {"I8", 1, 1},
	TypeI16:     {"I16", 1, 2},
	TypeI32:     {"I32", 1, 4},
	TypeI64:     {"I64", 1, 8},
	TypeF64:     {"F64", 1, 8},
	TypeIQ1_M:   {"IQ1_M", 256, 56},
	TypeBF16:    {"BF16", 1, 2},
	TypeTQ1_0:   {"TQ1_0", 256, 54},
	TypeTQ2_0:   {"TQ2_0", 256, 66},
	TypeMXFP4:   {"MXFP4", 32, 17},
	TypeNVFP4:   {"NVFP4", 64, 36},
	TypeQ1_0:    {"Q1_0", 128, 18},
	TypeQ2_0:    {"Q2_0", 64, 18},
}

// Valid reports whether t is a type ggml b11669 can load.
func (t Type) Valid() bool {
	_, ok := typeTable[t]
	return ok
}

// String returns ggml's name for the type in upper case ("F32", "Q4_K"), or "Type(N)" if unknown.
func (t Type) String() string {
	if tt, ok := typeTable[t]; ok {
		return tt.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize is the number of elements per block (1 for F32, F16, BF16 and integer types); 0 if unknown.
func (t Type) BlockSize() int { return typeTable[t].blockSize }

// TypeSize is the number of bytes per block; 0 if unknown.
func (t Type) TypeSize() int { return typeTable[t].typeSize }

// RowSize is the number of bytes of a row of ne0 elements (ne0 must be a multiple of BlockSize).
func (t Type) RowSize(ne0 int64) int64 {
	tt, ok := typeTable[t]
	if !ok {
		return 0
	}
	return ne0 / int64(tt.blockSize) * int64(tt.typeSize)
}

// ParseType accepts a type name in any case ("q8_0", "Q4_K", "f16").
func ParseType(name string) (Type, error) {
	for t, tt := range typeTable {
		if strings.EqualFold(tt.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown tensor type %q", name)
}
