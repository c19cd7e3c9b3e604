package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// Token is a vocabulary id.
type Token = int32

// NoToken is LLAMA_TOKEN_NULL: the vocabulary has no such token.
const NoToken Token = -1

// Tokenize converts text to tokens. addSpecial adds BOS/EOS where the model asks for them;
// parseSpecial turns special-token text such as "<|im_start|>" into the special token rather than
// its characters.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	if _, err := m.ptr(); err != nil {
		return nil, err
	}
	if len(text) > math.MaxInt32 {
		return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
	}
	// A byte-level tokenizer makes at most one token per byte, plus BOS/EOS.
	buf := make([]C.llama_token, len(text)+8)
	ctext := C.CString(text) // copied: llama_tokenize may run long and text must not move
	defer C.free(unsafe.Pointer(ctext))
	for {
		n := C.llama_tokenize(m.vocab, ctext, C.int32_t(len(text)), &buf[0], C.int32_t(len(buf)),
			C.bool(addSpecial), C.bool(parseSpecial))
		if n == math.MinInt32 {
			return nil, &Error{Op: "llama_tokenize", Code: int(n), Msg: "token count overflows int32"}
		}
		if n >= 0 {
			out := make([]Token, n)
			for i := range out {
				out[i] = Token(buf[i])
			}
			return out, nil
		}
		// A negative result is the count it needs: retry once with that size.
		need := int(-n)
		if need <= len(buf) {
			return nil, &Error{Op: "llama_tokenize", Code: int(n), Msg: "inconsistent token count"}
		}
		buf = make([]C.llama_token, need)
	}
}

// TokenToPiece returns the bytes of one token. special renders control tokens as their text (e.g.
// "<|im_end|>") rather than nothing. A piece may be an incomplete UTF-8 sequence.
func (m *Model) TokenToPiece(tok Token, special bool) (string, error) {
	if _, err := m.ptr(); err != nil {
		return "", err
	}
	if n := m.VocabSize(); tok < 0 || int(tok) >= n {
		return "", fmt.Errorf("token to piece: token %d is outside the vocabulary (0..%d)", tok, n-1)
	}
	var small [64]byte
	buf := small[:]
	for {
		n := C.llama_token_to_piece(m.vocab, C.llama_token(tok), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special))
		if n >= 0 {
			return string(buf[:n]), nil
		}
		need := int(-n)
		if need <= len(buf) {
			return "", &Error{Op: "llama_token_to_piece", Code: int(n), Msg: "inconsistent length"}
		}
		buf = make([]byte, need)
	}
}

// Detokenize converts tokens back to text. removeSpecial drops BOS/EOS the model adds;
// unparseSpecial renders special tokens as their text.
func (m *Model) Detokenize(tokens []Token, removeSpecial, unparseSpecial bool) (string, error) {
	if _, err := m.ptr(); err != nil {
		return "", err
	}
	if len(tokens) == 0 {
		return "", nil
	}
	nv := m.VocabSize()
	ctoks := make([]C.llama_token, len(tokens))
	for i, t := range tokens {
		if t < 0 || int(t) >= nv {
			return "", fmt.Errorf("detokenize: token %d at index %d is outside the vocabulary (0..%d)", t, i, nv-1)
		}
		ctoks[i] = C.llama_token(t)
	}
	buf := make([]byte, len(tokens)*8+16)
	for {
		n := C.llama_detokenize(m.vocab, &ctoks[0], C.int32_t(len(ctoks)), (*C.char)(unsafe.Pointer(&buf[0])),
			C.int32_t(len(buf)), C.bool(removeSpecial), C.bool(unparseSpecial))
		if n >= 0 {
			return string(buf[:n]), nil
		}
		need := int(-n)
		if need <= len(buf) {
			return "", &Error{Op: "llama_detokenize", Code: int(n), Msg: "inconsistent length"}
		}
		buf = make([]byte, need)
	}
}

// VocabSize is the number of tokens in the vocabulary.
func (m *Model) VocabSize() int {
	if _, err := m.ptr(); err != nil {
		return 0
	}
	return int(C.llama_vocab_n_tokens(m.vocab))
}

// BOS, EOS and EOT are the model's special tokens (NoToken when it has none).
func (m *Model) BOS() Token {
	return m.special(func(v *C.struct_llama_vocab) C.llama_token { return C.llama_vocab_bos(v) })
}

// EOS is the end-of-sentence token.
func (m *Model) EOS() Token {
	return m.special(func(v *C.struct_llama_vocab) C.llama_token { return C.llama_vocab_eos(v) })
}

// EOT is the end-of-turn token.
func (m *Model) EOT() Token {
	return m.special(func(v *C.struct_llama_vocab) C.llama_token { return C.llama_vocab_eot(v) })
}

func (m *Model) special(get func(*C.struct_llama_vocab) C.llama_token) Token {
	if _, err := m.ptr(); err != nil {
		return NoToken
	}
	return Token(get(m.vocab))
}

// AddsBOS reports whether tokenizing with addSpecial prepends BOS.
func (m *Model) AddsBOS() bool {
	_, err := m.ptr()
	return err == nil && bool(C.llama_vocab_get_add_bos(m.vocab))
}

// IsEOG reports whether tok ends generation (EOS, EOT, or another end-of-generation token).
func (m *Model) IsEOG(tok Token) bool {
	if _, err := m.ptr(); err != nil {
		return false
	}
	return bool(C.llama_vocab_is_eog(m.vocab, C.llama_token(tok)))
}

// IsControl reports whether tok is a control token.
func (m *Model) IsControl(tok Token) bool {
	if _, err := m.ptr(); err != nil {
		return false
	}
	return bool(C.llama_vocab_is_control(m.vocab, C.llama_token(tok)))
}
