// Fuzz target: the request validators of common/validation.h (DESIGN.md
// invariant 8: every bad input gets a clear error naming the field and the
// rule). Properties checked on every input:
//  * nothing crashes or reads out of bounds (ASan/UBSan under fuzz/run.sh);
//  * every error is INVALID_ARGUMENT and its message starts with
//    "<field>: " followed by a non-empty rule;
//  * accept/refuse agrees with a straightforward reference implementation of
//    each documented rule written here;
//  * a long hostile value is not echoed whole into the message.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/validation.h"
#include "fuzz/fuzz_input.h"

namespace iommu {
namespace fuzz {
namespace {

bool Lower(char c) { return c >= 'a' && c <= 'z'; }
bool Digit(char c) { return c >= '0' && c <= '9'; }
bool LowerHex(char c) { return Digit(c) || (c >= 'a' && c <= 'f'); }
int HexVal(char c) { return Digit(c) ? c - '0' : c - 'a' + 10; }

bool RefTenant(const std::string& v) {
  if (v.empty() || v.size() > 63 || !Lower(v[0])) return false;
  for (char c : v) {
    if (!Lower(c) && !Digit(c) && c != '-') return false;
  }
  return true;
}
bool RefNode(const std::string& v) {
  if (v.empty() || v.size() > 63 || !(Lower(v[0]) || Digit(v[0]))) return false;
  for (char c : v) {
    if (!Lower(c) && !Digit(c) && c != '-' && c != '.') return false;
  }
  return true;
}
bool RefRequestId(const std::string& v) {
  if (v.size() > 128) return false;
  for (char c : v) {
    const bool alnum = Lower(c) || Digit(c) || (c >= 'A' && c <= 'Z');
    if (!alnum && c != '.' && c != '_' && c != ':' && c != '-') return false;
  }
  return true;
}
bool RefPci(const std::string& v) {
  if (v.size() != 12 || v[4] != ':' || v[7] != ':' || v[10] != '.') return false;
  for (int i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!LowerHex(v[i])) return false;
  }
  const int dev = HexVal(v[8]) * 16 + HexVal(v[9]);
  const int fn = HexVal(v[11]);
  return dev <= 0x1f && fn <= 7;
}
bool RefObjectId(const std::string& v, const std::string& prefix) {
  if (v.size() != prefix.size() + 16 || v.compare(0, prefix.size(), prefix) != 0) return false;
  for (size_t i = prefix.size(); i < v.size(); ++i) {
    if (!LowerHex(v[i])) return false;
  }
  return true;
}

// An error names the field first, then states a rule; a hostile value is cut.
void CheckFieldError(const absl::Status& s, const std::string& field, const std::string& value) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument, s.ToString());
  const std::string prefix = field + ": ";
  FUZZ_CHECK(absl::StartsWith(s.message(), prefix), absl::StrCat("field ", field, ": ", s.ToString()));
  FUZZ_CHECK(s.message().size() > prefix.size(), s.ToString());
  // Quote() keeps 64 characters, each at most 4 after C-escaping, plus the rule.
  FUZZ_CHECK(s.message().size() <= prefix.size() + 200 + 4 * 64, absl::StrCat("message too long: ", s.message().size(), " for value of ", value.size()));
}

void CheckString(const absl::Status& s, bool ref_ok, const std::string& field,
                 const std::string& value, const char* what) {
  if (s.ok()) {
    FUZZ_CHECK(ref_ok, absl::StrCat(what, " accepted a value the rule refuses: \"",
                                    absl::CHexEscape(value), "\""));
  } else {
    FUZZ_CHECK(!ref_ok, absl::StrCat(what, " refused a value the rule accepts: \"",
                                     absl::CHexEscape(value), "\": ", s.ToString()));
    CheckFieldError(s, field, value);
  }
}

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace iommu;         // NOLINT: a fuzz target, not library code.
  using namespace iommu::fuzz;   // NOLINT
  FuzzInput in(data, size);
  // The field name comes from the input too: validators must not assume it.
  std::string field = in.ShortString();
  if (field.empty()) field = "f";
  while (!in.empty()) {
    const uint8_t op = in.U8() % 7;
    switch (op) {
      case 0: {
        const std::string v = in.ShortString();
        CheckString(ValidateTenantId(field, v), RefTenant(v), field, v, "ValidateTenantId");
        break;
      }
      case 1: {
        const std::string v = in.ShortString();
        CheckString(ValidateNodeName(field, v), RefNode(v), field, v, "ValidateNodeName");
        break;
      }
      case 2: {
        const std::string v = in.ShortString();
        CheckString(ValidateRequestId(field, v), RefRequestId(v), field, v, "ValidateRequestId");
        break;
      }
      case 3: {
        const std::string v = in.ShortString();
        CheckString(ValidatePciAddress(field, v), RefPci(v), field, v, "ValidatePciAddress");
        break;
      }
      case 4: {
        const std::string prefix = in.Bool() ? "c-" : (in.Bool() ? "w-" : in.ShortString());
        const std::string v = in.ShortString();
        CheckString(ValidateObjectId(field, v, prefix), RefObjectId(v, prefix), field, v,
                    "ValidateObjectId");
        break;
      }
      case 5: {
        const uint32_t requested = static_cast<uint32_t>(in.UInt(4));
        absl::StatusOr<uint32_t> p = EffectivePageSize(field, requested);
        if (requested == 0) {
          FUZZ_CHECK(p.ok() && *p == kDefaultPageSize, "default page size");
        } else if (requested <= kMaxPageSize) {
          FUZZ_CHECK(p.ok() && *p == requested, "page size passes through");
        } else {
          FUZZ_CHECK(!p.ok(), "page size above the maximum accepted");
          CheckFieldError(p.status(), field, "");
        }
        break;
      }
      case 6: {
        // Page sizes the kernel reports are powers of two; an invalid one is
        // the caller's bug and comes back INTERNAL.
        const uint8_t shift = in.U8();
        const bool bad_page = shift >= 64;
        const uint64_t page_size = bad_page ? in.U64() : (uint64_t{1} << shift);
        const uint64_t sz = in.Bool() ? in.U64() : page_size * in.UInt(2);
        const uint64_t align = in.Bool() ? in.U64() : (in.Bool() ? 0 : page_size << (in.U8() % 8));
        const bool fixed = in.Bool();
        const uint64_t base = in.Bool() ? in.U64() : align * in.UInt(4);
        absl::StatusOr<uint64_t> a = ValidateWindowRequest(sz, align, fixed, base, page_size);
        const bool page_ok = IsPowerOfTwo(page_size);
        if (!page_ok) {
          FUZZ_CHECK(!a.ok() && a.status().code() == absl::StatusCode::kInternal,
                     "bad page size must be INTERNAL");
          break;
        }
        // Reference rule, as documented in validation.h.
        const uint64_t eff = align == 0 ? page_size : align;
        bool ok = sz > 0 && sz % page_size == 0 && IsPowerOfTwo(eff) && eff >= page_size;
        if (ok && fixed) ok = base % eff == 0 && sz - 1 <= UINT64_MAX - base;
        if (a.ok()) {
          FUZZ_CHECK(ok, absl::StrCat("accepted size=", sz, " align=", align, " base=", base,
                                      " page=", page_size));
          FUZZ_CHECK(*a == eff, "returned alignment");
        } else {
          FUZZ_CHECK(!ok, a.status().ToString());
          const absl::string_view m = a.status().message();
          FUZZ_CHECK(a.status().code() == absl::StatusCode::kInvalidArgument, a.status().ToString());
          FUZZ_CHECK(absl::StartsWith(m, "size: ") || absl::StartsWith(m, "alignment: ") ||
                         absl::StartsWith(m, "base: "),
                     a.status().ToString());
        }
        break;
      }
    }
  }
  return 0;
}
