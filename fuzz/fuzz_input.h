// FuzzInput: reads typed values off the front of a fuzzer's byte string, in
// the spirit of libFuzzer's FuzzedDataProvider but with no clang-only header,
// so the targets also build with gcc for the corpus-replay tests. Reading past
// the end yields zeros / empty strings, never an error, so every byte string
// decodes to some op sequence.
//
// Not thread-safe; one per LLVMFuzzerTestOneInput call.
#ifndef FUZZ_FUZZ_INPUT_H_
#define FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace iommu {
namespace fuzz {

class FuzzInput final {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool Bool() { return U8() & 1; }

  // Little-endian, `bytes` of them (1-8).
  uint64_t UInt(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(U8()) << (8 * i);
    return v;
  }
  uint64_t U64() { return UInt(8); }

  // One byte of length (0-255, capped at what is left), then that many bytes.
  std::string ShortString() {
    size_t n = U8();
    return Bytes(n);
  }
  // Two bytes of length, then that many bytes.
  std::string String16() {
    size_t n = static_cast<size_t>(UInt(2));
    return Bytes(n);
  }
  std::string Bytes(size_t n) {
    if (n > remaining()) n = remaining();
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  std::string Rest() { return Bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A broken property: prints and aborts, so libFuzzer (or the replay test)
// reports the input that broke it.
[[noreturn]] inline void FuzzFail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", file, line, what.c_str());
  std::abort();
}

}  // namespace fuzz
}  // namespace iommu

#define FUZZ_CHECK(cond, msg)                                                  \
  do {                                                                         \
    if (!(cond)) ::iommu::fuzz::FuzzFail(__FILE__, __LINE__, std::string(#cond) + " -- " + (msg)); \
  } while (0)

#endif  // FUZZ_FUZZ_INPUT_H_
