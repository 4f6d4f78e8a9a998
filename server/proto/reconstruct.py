#!/usr/bin/env python3
"""Rebuilds a .proto file from the serialized FileDescriptorProto that the
E2B Python SDK embeds in its generated modules (e2b/envd/*/*_pb.py).

The descriptor is the interface definition itself; this script only prints
it back in .proto syntax so that build.rs can compile it with protox.

    python3 reconstruct.py SDK_PB_MODULE.py > NAME.proto

Needs Google's `protobuf` package (pip install protobuf) for
descriptor_pb2; the SDK itself need not be importable.
"""
import ast
import sys

from google.protobuf import descriptor_pb2 as d

SCALARS = {
    d.FieldDescriptorProto.TYPE_DOUBLE: "double",
    d.FieldDescriptorProto.TYPE_FLOAT: "float",
    d.FieldDescriptorProto.TYPE_INT64: "int64",
    d.FieldDescriptorProto.TYPE_UINT64: "uint64",
    d.FieldDescriptorProto.TYPE_INT32: "int32",
    d.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    d.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    d.FieldDescriptorProto.TYPE_BOOL: "bool",
    d.FieldDescriptorProto.TYPE_STRING: "string",
    d.FieldDescriptorProto.TYPE_BYTES: "bytes",
    d.FieldDescriptorProto.TYPE_UINT32: "uint32",
    d.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    d.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    d.FieldDescriptorProto.TYPE_SINT32: "sint32",
    d.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def embedded_descriptor(path):
    """The bytes literal given to file_desc(...) in a generated module."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "file_desc"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            return node.args[0].value
    sys.exit(f"{path}: no file_desc(b'...') call found")


def type_name(field, package):
    if field.type in SCALARS:
        return SCALARS[field.type]
    name = field.type_name.lstrip(".")
    # Names in the file's own package print relative, as written in sources.
    if name.startswith(package + "."):
        return name[len(package) + 1 :]
    return name


def local(full, package):
    full = full.lstrip(".")
    return full[len(package) + 1 :] if full.startswith(package + ".") else full


def emit_enum(enum, indent, out):
    pad = "  " * indent
    out.append(f"{pad}enum {enum.name} {{")
    for value in enum.value:
        out.append(f"{pad}  {value.name} = {value.number};")
    out.append(f"{pad}}}")


def emit_field(field, msg, package, pad, out, maps):
    label = ""
    if field.label == d.FieldDescriptorProto.LABEL_REPEATED:
        entry = maps.get(field.type_name.lstrip("."))
        if entry is not None:
            key = type_name(entry.field[0], package)
            value = type_name(entry.field[1], package)
            out.append(f"{pad}map<{key}, {value}> {field.name} = {field.number};")
            return
        label = "repeated "
    elif field.proto3_optional:
        label = "optional "
    out.append(f"{pad}{label}{type_name(field, package)} {field.name} = {field.number};")


def emit_message(msg, prefix, package, indent, out):
    pad = "  " * indent
    full = f"{prefix}.{msg.name}"
    maps = {
        f"{full}.{nested.name}".lstrip("."): nested
        for nested in msg.nested_type
        if nested.options.map_entry
    }
    out.append(f"{pad}message {msg.name} {{")
    for nested in msg.nested_type:
        if not nested.options.map_entry:
            emit_message(nested, full, package, indent + 1, out)
    for enum in msg.enum_type:
        emit_enum(enum, indent + 1, out)
    # Real oneofs group their fields; proto3 `optional` makes synthetic ones.
    real_oneofs = {
        i
        for i, _ in enumerate(msg.oneof_decl)
        if not any(
            f.HasField("oneof_index") and f.oneof_index == i and f.proto3_optional
            for f in msg.field
        )
    }
    done = set()
    for field in msg.field:
        if field.HasField("oneof_index") and field.oneof_index in real_oneofs:
            index = field.oneof_index
            if index in done:
                continue
            done.add(index)
            out.append(f"{pad}  oneof {msg.oneof_decl[index].name} {{")
            for member in msg.field:
                if member.HasField("oneof_index") and member.oneof_index == index:
                    emit_field(member, msg, package, pad + "    ", out, maps)
            out.append(f"{pad}  }}")
        else:
            emit_field(field, msg, package, pad + "  ", out, maps)
    out.append(f"{pad}}}")


def render(fdp, source):
    out = [
        f"// Reconstructed by server/proto/reconstruct.py from the descriptor embedded",
        f"// in {source}.",
        f'syntax = "{fdp.syntax or "proto2"}";',
        "",
        f"package {fdp.package};",
        "",
    ]
    for dep in fdp.dependency:
        out.append(f'import "{dep}";')
    if fdp.dependency:
        out.append("")
    if fdp.options.HasField("go_package"):
        out.append(f'option go_package = "{fdp.options.go_package}";')
        out.append("")
    for enum in fdp.enum_type:
        emit_enum(enum, 0, out)
        out.append("")
    for msg in fdp.message_type:
        emit_message(msg, "." + fdp.package, fdp.package, 0, out)
        out.append("")
    for service in fdp.service:
        out.append(f"service {service.name} {{")
        for m in service.method:
            cs = "stream " if m.client_streaming else ""
            ss = "stream " if m.server_streaming else ""
            out.append(
                f"  rpc {m.name}({cs}{local(m.input_type, fdp.package)}) "
                f"returns ({ss}{local(m.output_type, fdp.package)});"
            )
        out.append("}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main():
    path = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else path
    fdp = d.FileDescriptorProto.FromString(embedded_descriptor(path))
    sys.stdout.write(render(fdp, label))


if __name__ == "__main__":
    main()
