"""etcd_protos: etcd v3's API protos from Debian's golang-etcd-server-dev.

Why: the broker's etcd store (issue 14) and the etcd benchmark (issue 13)
talk to etcd's v3 gRPC API, and its C++ stubs are generated at build time
(//third_party/etcd:etcd_cc_grpc) from the .proto files Debian installs, so
they always match the etcd-server package next to them and nothing of etcd's
is copied into this repository.

How the imports map: rpc.proto imports "etcd/mvcc/mvccpb/kv.proto",
"etcd/auth/authpb/auth.proto", "gogoproto/gogo.proto" and
"google/api/annotations.proto" (which imports "google/api/http.proto"), paths
that exist in no single directory of /usr/share/gocode/src: etcd's files sit
under go.etcd.io/, gogoproto under github.com/gogo/protobuf/ and google/api
under grpc-gateway's third_party/googleapis/. This rule symlinks each file
into the repository at its import path, so protoc needs one -I (this
repository's root) and the generated code's #includes ("etcd/mvcc/mvccpb/kv.pb.h")
follow the same layout. google/protobuf/descriptor.proto comes with protoc
(/usr/include, libprotobuf-dev).

On a machine without the package the fetch fails and says what to install
(scripts/setup.sh installs it). Only what depends on @etcd_protos fetches
it, but `bazel build //...` does.
"""

# Import path -> path under the Go source root, one line per file protoc reads.
_FILES = {
    "etcd/etcdserver/etcdserverpb/rpc.proto": "go.etcd.io/etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcd/mvcc/mvccpb/kv.proto": "go.etcd.io/etcd/mvcc/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto": "go.etcd.io/etcd/auth/authpb/auth.proto",
    "gogoproto/gogo.proto": "github.com/gogo/protobuf/gogoproto/gogo.proto",
    "google/api/annotations.proto": "github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis/google/api/annotations.proto",
    "google/api/http.proto": "github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis/google/api/http.proto",
}

def _etcd_protos_impl(rctx):
    root = rctx.attr.gocode_root
    missing = [src for src in _FILES.values() if not rctx.path(root + "/" + src).exists]
    if missing:
        fail(("etcd_protos: missing under %s: %s. The etcd client stubs are generated from " +
              "the protos of Debian's golang-etcd-server-dev (which pulls in " +
              "golang-github-gogo-protobuf-dev and golang-github-grpc-ecosystem-grpc-gateway-dev): " +
              "run scripts/setup.sh, or apt-get install golang-etcd-server-dev") % (root, ", ".join(missing)))
    for import_path, src in _FILES.items():
        rctx.symlink(root + "/" + src, import_path)
    rctx.symlink(rctx.path(rctx.attr.build_file), "BUILD.bazel")

etcd_protos = repository_rule(
    implementation = _etcd_protos_impl,
    attrs = {
        "gocode_root": attr.string(default = "/usr/share/gocode/src"),
        "build_file": attr.label(mandatory = True, allow_single_file = True),
    },
    local = True,
    doc = "etcd v3's API protos from Debian's golang-etcd-server-dev, laid out at their import paths.",
)
