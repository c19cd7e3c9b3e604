package binding

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role    string
	Content string
}

// ChatMLTemplate is the fallback for models without a chat template: llama.cpp's built-in "chatml"
// (<|im_start|>role\ncontent<|im_end|>\n ...), which most instruction-tuned GGUFs without a template
// were trained on.
const ChatMLTemplate = "chatml"

// ErrUnsupportedTemplate is returned when llama.cpp does not recognise a chat template (it only
// implements a fixed list of templates, not a Jinja engine).
var ErrUnsupportedTemplate = errors.New("chat template not supported by llama.cpp")

// ApplyChatTemplate renders messages with the model's own chat template, or with ChatML when the
// model has none. addAssistant ends the prompt with the opening of an assistant turn.
func (m *Model) ApplyChatTemplate(messages []ChatMessage, addAssistant bool) (string, error) {
	tmpl := m.ChatTemplate()
	if tmpl == "" {
		tmpl = ChatMLTemplate
	}
	return ApplyChatTemplate(tmpl, messages, addAssistant)
}

// ApplyChatTemplate renders messages with tmpl: a Jinja template text that llama.cpp recognises, or
// the name of a built-in template ("chatml", "llama3", ...; see BuiltinChatTemplates).
func ApplyChatTemplate(tmpl string, messages []ChatMessage, addAssistant bool) (string, error) {
	if err := Init(); err != nil {
		return "", err
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	// The messages' strings live on the C heap for the duration of the call.
	n := len(messages)
	var msgs *C.struct_llama_chat_message
	total := 0
	if n > 0 {
		msgs = (*C.struct_llama_chat_message)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.struct_llama_chat_message{}))))
		defer C.free(unsafe.Pointer(msgs))
		arr := unsafe.Slice(msgs, n)
		for i, msg := range messages {
			arr[i].role = C.CString(msg.Role)
			defer C.free(unsafe.Pointer(arr[i].role))
			arr[i].content = C.CString(msg.Content)
			defer C.free(unsafe.Pointer(arr[i].content))
			total += len(msg.Role) + len(msg.Content)
		}
	}
	buf := make([]byte, 2*total+256)
	for {
		r := C.llama_chat_apply_template(ctmpl, msgs, C.size_t(n), C.bool(addAssistant),
			(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)))
		if r < 0 {
			name := tmpl
			if len(name) > 60 {
				name = name[:60] + "..."
			}
			return "", fmt.Errorf("apply chat template %q: %w", name, ErrUnsupportedTemplate)
		}
		if int(r) <= len(buf) {
			return string(buf[:r]), nil
		}
		buf = make([]byte, int(r))
	}
}

// BuiltinChatTemplates lists the template names llama.cpp implements.
func BuiltinChatTemplates() []string {
	if Init() != nil {
		return nil
	}
	n := int(C.llama_chat_builtin_templates(nil, 0))
	if n <= 0 {
		return nil
	}
	ptrs := make([]*C.char, n)
	C.llama_chat_builtin_templates(&ptrs[0], C.size_t(n))
	out := make([]string, n)
	for i, p := range ptrs {
		out[i] = C.GoString(p)
	}
	return out
}
