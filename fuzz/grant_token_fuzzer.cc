// Fuzz target: common/grant_token.h VerifyGrant on hostile tokens. Three
// shapes of input, chosen by the first byte:
//  0: raw token bytes;
//  1: arbitrary payload bytes correctly signed with the agent's key, so the
//     protobuf parse of a signed payload and the expiry check are reached;
//  2: a valid token for a fuzz-built grant with one byte replaced.
// Properties: no crash; with a short key FAILED_PRECONDITION "grant key: ";
// otherwise every error is UNAUTHENTICATED "token: ..."; success only when
// the MAC over the decoded payload is the key's and now < expires_ms; a token
// has exactly one spelling (any changed byte is refused); and a verified
// grant re-signs to a token that verifies to the same grant.
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/stubs/logging.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grant_token.h"
#include "fuzz/fuzz_input.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace fuzz {
namespace {

constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
constexpr int64_t kNow = 1'700'000'000'000;

std::string Mac(const std::string& key, const std::string& payload) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string Token(const std::string& key, const std::string& payload) {
  return absl::StrCat("v1.", absl::WebSafeBase64Escape(payload), ".",
                      absl::WebSafeBase64Escape(Mac(key, payload)));
}

void CheckResult(const absl::StatusOr<v1::LauncherGrant>& g, const std::string& key,
                 const std::string& token) {
  if (key.size() < kMinGrantKeyBytes) {
    FUZZ_CHECK(g.status().code() == absl::StatusCode::kFailedPrecondition &&
                   absl::StartsWith(g.status().message(), "grant key: "),
               g.status().ToString());
    return;
  }
  if (!g.ok()) {
    FUZZ_CHECK(g.status().code() == absl::StatusCode::kUnauthenticated, g.status().ToString());
    FUZZ_CHECK(absl::StartsWith(g.status().message(), "token: "), g.status().ToString());
    FUZZ_CHECK(g.status().message().size() < 200, "message echoes the token");
    return;
  }
  // Accepted: it must be exactly the canonical token of its payload.
  FUZZ_CHECK(kNow < g->expires_ms(), "accepted an expired grant");
  const size_t dot = token.rfind('.');
  std::string payload;
  FUZZ_CHECK(absl::WebSafeBase64Unescape(token.substr(3, dot - 3), &payload), "payload decodes");
  FUZZ_CHECK(token == Token(key, payload), "accepted a token that is not canonical: " +
                                               absl::CHexEscape(token));
  // Re-signing the parsed grant gives a token that verifies to the same grant.
  absl::StatusOr<std::string> again = SignGrant(*g, key);
  FUZZ_CHECK(again.ok(), again.status().ToString());
  absl::StatusOr<v1::LauncherGrant> g2 = VerifyGrant(*again, key, kNow);
  FUZZ_CHECK(g2.ok(), g2.status().ToString());
  FUZZ_CHECK(g2->SerializeAsString() == g->SerializeAsString(), "re-signed grant differs");
}

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace iommu;        // NOLINT: a fuzz target, not library code.
  using namespace iommu::fuzz;  // NOLINT
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is expected here
  FuzzInput in(data, size);
  const uint8_t mode = in.U8();
  std::string key = kKey;
  if (mode & 0x80) key = in.ShortString();  // possibly too short
  if (key.size() > 1024) key.resize(1024);
  const int64_t now = kNow;
  switch (mode % 3) {
    case 0: {
      const std::string token = in.Rest();
      CheckResult(VerifyGrant(token, key, now), key, token);
      break;
    }
    case 1: {
      const std::string payload = in.Rest();
      const std::string token = Token(key, payload);
      absl::StatusOr<v1::LauncherGrant> g = VerifyGrant(token, key, now);
      CheckResult(g, key, token);
      if (key.size() >= kMinGrantKeyBytes && token.size() <= kMaxGrantTokenBytes) {
        v1::LauncherGrant parsed;
        const bool parses = parsed.ParseFromString(payload);
        const bool want_ok = parses && now < parsed.expires_ms();
        FUZZ_CHECK(g.ok() == want_ok, absl::StrCat("signed payload: ", g.status().ToString()));
      }
      break;
    }
    default: {
      v1::LauncherGrant grant;
      grant.set_token_id(in.ShortString());
      grant.set_node(in.ShortString());
      grant.set_container_id(in.ShortString());
      grant.set_tenant_id(in.ShortString());
      for (int n = in.U8() % 4; n > 0; --n) {
        auto* w = grant.add_windows();
        w->set_window_id(in.ShortString());
        w->set_base(in.U64());
        w->set_size(in.U64());
      }
      grant.set_issued_ms(static_cast<int64_t>(in.U64()));
      grant.set_expires_ms(in.Bool() ? now + 1 + static_cast<int64_t>(in.UInt(3))
                                     : static_cast<int64_t>(in.U64()));
      if (in.Bool()) grant.set_launcher_uid(static_cast<uint32_t>(in.UInt(4)));
      absl::StatusOr<std::string> signed_token = SignGrant(grant, key);
      if (!signed_token.ok()) {
        // Refused, never aborted: a short key, an oversize grant, a
        // string field that does not serialize.
        const absl::StatusCode code = signed_token.status().code();
        FUZZ_CHECK(code == absl::StatusCode::kFailedPrecondition ||
                       code == absl::StatusCode::kResourceExhausted ||
                       code == absl::StatusCode::kInvalidArgument,
                   signed_token.status().ToString());
        break;
      }
      std::string token = *std::move(signed_token);
      const std::string original = token;
      const size_t pos = static_cast<size_t>(in.UInt(2)) % (token.size() + 1);
      const uint8_t byte = in.U8();
      if (pos < token.size()) {
        token[pos] = static_cast<char>(byte);
      } else if (in.Bool()) {
        token.push_back(static_cast<char>(byte));
      }
      absl::StatusOr<v1::LauncherGrant> g = VerifyGrant(token, key, now);
      CheckResult(g, key, token);
      if (token != original) {
        FUZZ_CHECK(!g.ok(), "a changed token was accepted: " + absl::CHexEscape(token));
      } else if (now < grant.expires_ms() &&
                 v1::LauncherGrant().ParseFromString(grant.SerializeAsString())) {
        // (A grant with invalid UTF-8 in a string field signs but can never
        // verify: proto3 refuses to parse it. The broker only signs validated
        // ids, so that is refused as "malformed", which CheckResult accepts.)
        FUZZ_CHECK(g.ok() && g->SerializeAsString() == grant.SerializeAsString(),
                   g.status().ToString());
      }
      break;
    }
  }
  return 0;
}
