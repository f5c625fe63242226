package output

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Fields lists the paths and types of what -o json and -o yaml write for
// a message, as docs/output.md documents them: one "path: type" line per
// field, lists as path[], nested messages below their field.
func Fields(md protoreflect.MessageDescriptor) []string {
	var out []string
	fieldsOf(md, "", map[protoreflect.FullName]bool{}, &out)
	return out
}

func fieldsOf(md protoreflect.MessageDescriptor, prefix string, seen map[protoreflect.FullName]bool, out *[]string) {
	if seen[md.FullName()] {
		return
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		if target, ok := strings.CutPrefix(name, "has_"); ok && fd.Kind() == protoreflect.BoolKind && fields.ByName(protoreflect.Name(target)) != nil {
			continue // a presence flag: its field is null when absent
		}
		path := prefix + fd.JSONName()
		if fd.IsList() {
			path += "[]"
		}
		typ := kindName(fd)
		if fd.IsList() && fd.Message() != nil {
			typ = "object" // an item of a list is never null
		}
		if fields.ByName(protoreflect.Name("has_"+name)) != nil {
			typ += " or null"
		}
		*out = append(*out, fmt.Sprintf("%s: %s", path, typ))
		if m := fd.Message(); m != nil && m.FullName() != timestampName && !fd.IsMap() {
			fieldsOf(m, path+".", seen, out)
		}
	}
}

func kindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "boolean"
	case protoreflect.StringKind:
		return "string"
	case protoreflect.BytesKind:
		return "string (base64)"
	case protoreflect.EnumKind:
		return "string (one of the enum's names)"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.IsMap() {
			return "object"
		}
		if fd.Message().FullName() == timestampName {
			return "string (RFC 3339 time) or null"
		}
		return "object or null"
	}
	return "number (integer)"
}
