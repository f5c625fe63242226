package output

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Object is a listing's record as scripts read it (-o json|yaml): its
// fields in the API's order, under the API's JSON names (lowerCamelCase).
// Values are nil, bool, int64, uint64, float64, string, []any or Object.
type Object []Field

// Field is one named value of an Object.
type Field struct {
	Name  string
	Value any
}

// FromProto turns an API message into an Object. Unlike protojson it
// writes 64-bit integers as numbers, a timestamp as RFC 3339 text (null
// when unset), an enum by its name, and leaves out the presence flags
// has_X, making X null instead when it is absent: so a job that has not
// ended has "exitCode": null, not "exitCode": 0 and "hasExitCode": false.
func FromProto(m proto.Message) Object {
	return fromMessage(m.ProtoReflect())
}

func fromMessage(m protoreflect.Message) Object {
	fields := m.Descriptor().Fields()
	// has_X flags X's presence: the flag is left out, X is null without it.
	present, isFlag := map[protoreflect.Name]bool{}, map[protoreflect.Name]bool{}
	for i := range fields.Len() {
		fd := fields.Get(i)
		if name, ok := strings.CutPrefix(string(fd.Name()), "has_"); ok && fd.Kind() == protoreflect.BoolKind && fields.ByName(protoreflect.Name(name)) != nil {
			present[protoreflect.Name(name)], isFlag[fd.Name()] = m.Get(fd).Bool(), true
		}
	}
	out := make(Object, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		if isFlag[fd.Name()] {
			continue
		}
		var v any
		switch {
		case !present[fd.Name()] && isFlag["has_"+fd.Name()]:
		case fd.IsList():
			list := m.Get(fd).List()
			items := make([]any, 0, list.Len())
			for j := range list.Len() {
				items = append(items, fromValue(fd, list.Get(j)))
			}
			v = items
		case fd.IsMap():
			mp := m.Get(fd).Map()
			obj := Object{}
			mp.Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
				obj = append(obj, Field{k.String(), fromValue(fd.MapValue(), val)})
				return true
			})
			slices.SortFunc(obj, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
			v = obj
		case fd.Message() != nil && !m.Has(fd):
		default:
			v = fromValue(fd, m.Get(fd))
		}
		out = append(out, Field{fd.JSONName(), v})
	}
	return out
}

var timestampName = (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName()

func fromValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return v.Int()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int64(v.Enum())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		msg := v.Message()
		if msg.Descriptor().FullName() == timestampName {
			ts := msg.Interface().(*timestamppb.Timestamp)
			return ts.AsTime().UTC().Format(time.RFC3339Nano)
		}
		return fromMessage(msg)
	}
	return nil
}

// toObject turns any listing's data into an Object: API messages as
// FromProto does, anything else through encoding/json.
func toObject(data any) (any, error) {
	switch d := data.(type) {
	case proto.Message:
		return FromProto(d), nil
	case Object:
		return d, nil
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return fromJSON(v), nil
}

func fromJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		obj := Object{}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range x {
				if !yield(k) {
					return
				}
			}
		}) {
			obj = append(obj, Field{k, fromJSON(x[k])})
		}
		return obj
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = fromJSON(x[i])
		}
		return out
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// writeJSON writes v indented by two spaces, fields in order.
func writeJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	if err := appendJSON(&b, v, ""); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

func appendJSON(b *bytes.Buffer, v any, indent string) error {
	inner := indent + "  "
	switch x := v.(type) {
	case Object:
		if len(x) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteString("{\n")
		for i, f := range x {
			name, _ := json.Marshal(f.Name)
			b.WriteString(inner)
			b.Write(name)
			b.WriteString(": ")
			if err := appendJSON(b, f.Value, inner); err != nil {
				return err
			}
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[\n")
		for i, item := range x {
			b.WriteString(inner)
			if err := appendJSON(b, item, inner); err != nil {
				return err
			}
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			b.WriteString("null")
			return nil
		}
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	default:
		raw, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(raw)
	}
	return nil
}

// writeYAML writes v as a YAML document, fields in order.
func writeYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(yamlNode(v)); err != nil {
		return err
	}
	return enc.Close()
}

func yamlNode(v any) *yaml.Node {
	scalar := func(tag, value string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
	}
	switch x := v.(type) {
	case Object:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, f := range x {
			n.Content = append(n.Content, scalar("!!str", f.Name), yamlNode(f.Value))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, item := range x {
			n.Content = append(n.Content, yamlNode(item))
		}
		return n
	case nil:
		return scalar("!!null", "null")
	case bool:
		return scalar("!!bool", strconv.FormatBool(x))
	case int64:
		return scalar("!!int", strconv.FormatInt(x, 10))
	case uint64:
		return scalar("!!int", strconv.FormatUint(x, 10))
	case float64:
		return scalar("!!float", strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		return scalar("!!str", x)
	}
	return scalar("!!str", fmt.Sprint(v))
}
