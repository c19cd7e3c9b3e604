package gguf

import "fmt"

// ValueType is the type tag of a metadata value in a GGUF file (gguf_type).
type ValueType uint32

const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
	"string", "array", "uint64", "int64", "float64"}

func (v ValueType) String() string {
	if int(v) < len(valueTypeNames) {
		return valueTypeNames[v]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(v))
}

// size is the encoded size of one scalar value; strings report their minimum (the length prefix).
func (v ValueType) size() int {
	switch v {
	case ValueUint8, ValueInt8, ValueBool:
		return 1
	case ValueUint16, ValueInt16:
		return 2
	case ValueUint32, ValueInt32, ValueFloat32:
		return 4
	case ValueUint64, ValueInt64, ValueFloat64, ValueString:
		return 8
	}
	return 0
}

// KV is one metadata entry. Value holds the Go type matching the GGUF type:
//
//	uint8 int8 uint16 int16 uint32 int32 uint64 int64 float32 float64 bool string
//
// and arrays as typed slices of those: []uint8 ... []float64, []bool, []string. Nested arrays are
// not part of what ggml reads and are rejected.
type KV struct {
	Key   string
	Value any
}

// Type reports the GGUF type of the value and, for arrays, the element type.
func (kv KV) Type() (typ, elem ValueType, err error) { return valueTypeOf(kv.Value) }

func valueTypeOf(v any) (typ, elem ValueType, err error) {
	switch v.(type) {
	case uint8:
		return ValueUint8, 0, nil
	case int8:
		return ValueInt8, 0, nil
	case uint16:
		return ValueUint16, 0, nil
	case int16:
		return ValueInt16, 0, nil
	case uint32:
		return ValueUint32, 0, nil
	case int32:
		return ValueInt32, 0, nil
	case uint64:
		return ValueUint64, 0, nil
	case int64:
		return ValueInt64, 0, nil
	case float32:
		return ValueFloat32, 0, nil
	case float64:
		return ValueFloat64, 0, nil
	case bool:
		return ValueBool, 0, nil
	case string:
		return ValueString, 0, nil
	case []uint8:
		return ValueArray, ValueUint8, nil
	case []int8:
		return ValueArray, ValueInt8, nil
	case []uint16:
		return ValueArray, ValueUint16, nil
	case []int16:
		return ValueArray, ValueInt16, nil
	case []uint32:
		return ValueArray, ValueUint32, nil
	case []int32:
		return ValueArray, ValueInt32, nil
	case []uint64:
		return ValueArray, ValueUint64, nil
	case []int64:
		return ValueArray, ValueInt64, nil
	case []float32:
		return ValueArray, ValueFloat32, nil
	case []float64:
		return ValueArray, ValueFloat64, nil
	case []bool:
		return ValueArray, ValueBool, nil
	case []string:
		return ValueArray, ValueString, nil
	}
	return 0, 0, fmt.Errorf("value of Go type %T has no GGUF type (use a sized integer, float, bool, string or a slice of one)", v)
}

// asUint converts any integer value to uint64; negative values do not convert.
func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if u, ok := asUint(v); ok {
		return float64(u), true
	}
	switch x := v.(type) {
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
