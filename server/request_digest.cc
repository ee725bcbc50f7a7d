#include "server/request_digest.h"

#include <cstddef>

namespace iommu {
namespace {

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

// Little-endian load of `n` <= 8 bytes at `p`.
uint64_t Load(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  }
  void Absorb(uint64_t m) {
    v3 ^= m;
    Round();  // c = 2 compression rounds.
    Round();
    v0 ^= m;
  }
  uint64_t Finish() {
    for (int i = 0; i < 4; ++i) Round();  // d = 4 finalization rounds.
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

// Initializes and absorbs `bytes` and the length block; `wide` selects the
// 128-bit variant's domain separation.
SipState Absorbed(const Hash128& key, absl::string_view bytes, bool wide) {
  SipState s{0x736f6d6570736575ULL ^ key.lo, 0x646f72616e646f6dULL ^ key.hi,
             0x6c7967656e657261ULL ^ key.lo, 0x7465646279746573ULL ^ key.hi};
  if (wide) s.v1 ^= 0xee;
  const size_t full = bytes.size() / 8 * 8;
  for (size_t i = 0; i < full; i += 8) s.Absorb(Load(bytes.data() + i, 8));
  const uint64_t last =
      (uint64_t{bytes.size() & 0xff} << 56) | Load(bytes.data() + full, bytes.size() - full);
  s.Absorb(last);
  return s;
}

}  // namespace

uint64_t SipHash64(const Hash128& key, absl::string_view bytes) {
  SipState s = Absorbed(key, bytes, /*wide=*/false);
  s.v2 ^= 0xff;
  return s.Finish();
}

Hash128 SipHash128(const Hash128& key, absl::string_view bytes) {
  SipState s = Absorbed(key, bytes, /*wide=*/true);
  s.v2 ^= 0xee;
  Hash128 out;
  out.lo = s.Finish();
  s.v1 ^= 0xdd;
  out.hi = s.Finish();
  return out;
}

uint64_t FingerprintDigest(absl::string_view fingerprint) {
  // Any fixed key: collisions cost a store read, never a wrong answer.
  static constexpr Hash128 kKey{0x6d6d6f752d726571ULL, 0x7473657571657200ULL};
  return SipHash64(kKey, fingerprint);
}

}  // namespace iommu
