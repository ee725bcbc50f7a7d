// Internal to the format library (client/format.h): what its files share,
// and nothing else may include. format.cc holds the Table, the scalars, the
// JSON entry point and the FormatTable / FormatNames dispatch;
// list_format.cc the list tables and usage; object_format.cc the "Key: value"
// views of single objects; describe_format.cc the views of describe and top.
//
// Like format.h: pure functions, thread-safe; Details is a plain value type.
#ifndef CLIENT_FORMAT_INTERNAL_H_
#define CLIENT_FORMAT_INTERNAL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "proto/broker.pb.h"

namespace iommu {
namespace client {

// "Key: value" lines with the values aligned. A value added with an empty
// key continues the value above it on a line of its own.
class Details final {
 public:
  void Add(std::string key, std::string value) {
    lines_.emplace_back(std::move(key), std::move(value));
  }
  std::string Render() const;

 private:
  std::vector<std::pair<std::string, std::string>> lines_;
};

// "unlimited" for a limit of 0, else the limit in bytes (FormatBytes) or as a
// plain number.
std::string OrUnlimited(uint64_t limit, bool bytes);

// "-" for an empty string, else the string.
std::string OrDash(const std::string& s);

// "yes" or "no".
std::string YesNo(bool b);

// The node's state name, with ",cordoned" appended when it is cordoned.
std::string NodeStateCell(const iommu::v1::Node& node);

// `used` as a whole percentage of `limit` ("42%"); "-" for a limit of 0.
std::string Percent(uint64_t used, uint64_t limit);

// The lines of FormatContainer, for views that add their own below them
// (object_format.cc).
void AddContainerDetails(const iommu::v1::Container& c, Details& d);

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_FORMAT_INTERNAL_H_
