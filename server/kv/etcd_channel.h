// The credentials of the store's channels to etcd (EtcdKvOptions' TLS
// files), apart from the store because they are the whole of etcd's
// authentication: how etcd's certificate is checked and how a rotation of
// the files is picked up are decided here and nowhere else. Internal to
// //server/kv:etcd_kv_store.
//
// Thread-safe: MakeChannelSecurity may be called from any thread; the
// result's fields are thread-safe (TlsMirror, grpc::ChannelCredentials).
#ifndef SERVER_KV_ETCD_CHANNEL_H_
#define SERVER_KV_ETCD_CHANNEL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/tls_mirror.h"
#include "grpcpp/security/credentials.h"
#include "server/kv/etcd_kv_store.h"

namespace iommu {
namespace kv {

// The channels' credentials, and the mirror of the TLS files they read
// (null for plaintext), which must outlive every channel made with them.
struct ChannelSecurity {
  std::shared_ptr<TlsMirror> mirror;
  std::shared_ptr<grpc::ChannelCredentials> creds;
};

// Plaintext without TLS files. Otherwise TLS credentials reading a
// TlsMirror of the files through gRPC's file watcher, so that a rotation
// is picked up without a restart and a set that does not hold together is
// never used (the mirror keeps the last good one). A first set that does
// not hold together is an error: the store does not open on it.
//
// etcd's certificate is checked as grpc::SslCredentials checked it: its
// chain against the CA (or the system's roots), then its SANs against the
// endpoint's host, both by gRPC during the handshake (verify_server_certs
// and the host name verifier), and the host of every call against the
// certificate (check_call_host).
//
// Errors (the store does not open on them): INVALID_ARGUMENT for a
// certificate without its key or a set that does not hold together, NOT_FOUND
// / PERMISSION_DENIED naming a file that cannot be read (TlsMirror's errors,
// prefixed "etcd TLS: "); INTERNAL if gRPC makes no credentials.
absl::StatusOr<ChannelSecurity> MakeChannelSecurity(const EtcdKvOptions& options);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_ETCD_CHANNEL_H_
