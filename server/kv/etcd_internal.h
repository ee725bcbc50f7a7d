// Internal to //server/kv:etcd_kv_store: what its files share, and nothing
// else may include. etcd_kv_store.cc is the store (unary KV and Lease calls,
// OpenEtcdKvStore); etcd_channel.cc makes the channels' credentials;
// etcd_watch.cc is a watch's stream and threads. Both the store and its
// watches hold an Endpoint and report etcd's errors the same way, so those
// live here.
//
// Thread-safe: an Endpoint's fields are constant once made and gRPC's
// channels and stubs are thread-safe; the functions are pure.
#ifndef SERVER_KV_ETCD_INTERNAL_H_
#define SERVER_KV_ETCD_INTERNAL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/tls_mirror.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

// One etcd endpoint: its channel and stubs (thread-safe, shared with the
// watches so that a handle may outlive the store).
struct Endpoint {
  // The TLS files the channel's credentials read (null: plaintext), shared
  // by every endpoint. First, so destroyed last: the mirror closes the
  // files gRPC reads, which must stay until the channel is gone.
  std::shared_ptr<TlsMirror> tls;
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
};

// The one place a grpc::Status from etcd becomes an absl::Status: OK as is;
// UNAVAILABLE naming `address` when etcd is unreachable or did not answer
// `what` within `call_timeout` (its outcome is then unknown); etcd's other
// codes unchanged, with `what` and `address` in the message.
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what, const std::string& address,
                      absl::Duration call_timeout);

// etcd's key-value `in` as the KvStore's, with the store's `prefix` taken off
// its key (every key this store reads from etcd is under it).
KeyValue StripPrefix(const mvccpb::KeyValue& in, const std::string& prefix);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_ETCD_INTERNAL_H_
