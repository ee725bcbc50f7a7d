"""proto_cc_library: .proto -> C++ messages (+ gRPC stubs) with Debian's protoc.

Bazel 4.2.3 offline has no rules_proto / com_google_protobuf, so one genrule per
.proto runs the system protoc with grpc_cpp_plugin and a cc_library wraps the
result. Imports are resolved from the workspace root ("proto/types.proto").
"""

def proto_cc_library(name, src, deps = [], grpc = False, visibility = None):
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    dep_srcs = [d + "_src" for d in deps]
    cmd = "$(location @iommu_broker//third_party:protoc) -I. --cpp_out=$(GENDIR) "
    if grpc:
        cmd += "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=$(location @iommu_broker//third_party:grpc_cpp_plugin) "
    cmd += "$(location " + src + ")"
    native.filegroup(name = name + "_src", srcs = [src] + dep_srcs, visibility = visibility)
    native.genrule(
        name = name + "_gen",
        srcs = [src] + dep_srcs,
        outs = outs,
        cmd = cmd,
        tools = [
            "@iommu_broker//third_party:protoc",
            "@iommu_broker//third_party:grpc_cpp_plugin",
        ],
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc"] if grpc else []),
        visibility = visibility,
    )
