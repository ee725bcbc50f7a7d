#include "client/json_format.h"

#include <cmath>
#include <cstdint>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace iommu {
namespace client {
namespace {

namespace pb = ::google::protobuf;

void AppendJsonString(absl::string_view text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void AppendJsonDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  } else {
    absl::StrAppendFormat(out, "%.17g", v);
  }
}

void AppendJsonMessage(const pb::Message& message, int indent, std::string* out);

// One value of `field` (element `index` of a repeated field, else -1).
void AppendJsonValue(const pb::Message& m, const pb::FieldDescriptor* f, int index, int indent,
                     std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(out, rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      absl::StrAppend(out, rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      absl::StrAppend(out, rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      absl::StrAppend(out, rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      AppendJsonDouble(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f), out);
      break;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      AppendJsonDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f), out);
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      out->append((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false");
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int number = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const pb::EnumValueDescriptor* v = f->enum_type()->FindValueByNumber(number);
      if (v != nullptr) {
        AppendJsonString(v->name(), out);
      } else {
        absl::StrAppend(out, number);
      }
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      AppendJsonString(f->type() == pb::FieldDescriptor::TYPE_BYTES ? absl::Base64Escape(v) : v,
                       out);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      AppendJsonMessage(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f), indent,
                        out);
      break;
  }
}

// A map entry's key as a JSON object key.
std::string MapKey(const pb::Message& entry) {
  const pb::FieldDescriptor* k = entry.GetDescriptor()->map_key();
  std::string text;
  if (k->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    text = entry.GetReflection()->GetString(entry, k);
  } else {
    AppendJsonValue(entry, k, -1, 0, &text);
  }
  return text;
}

// True for an int64 field holding milliseconds since the epoch: every int64
// field of the API whose name ends in "_ms" (create_time_ms, expires_ms, ...).
bool IsEpochMillis(const pb::FieldDescriptor* f) {
  return !f->is_repeated() && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 &&
         absl::EndsWith(f->name(), "_ms");
}

// Map field `f` of `m` (a member of an object indented by `indent`) as a JSON
// object, its entries sorted by key so that the output is stable.
void AppendJsonMap(const pb::Message& m, const pb::FieldDescriptor* f, int indent,
                   std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  const int n = r->FieldSize(m, f);
  if (n == 0) {
    out->append("{}");
    return;
  }
  std::map<std::string, const pb::Message*> entries;
  for (int j = 0; j < n; ++j) {
    const pb::Message& entry = r->GetRepeatedMessage(m, f, j);
    entries[MapKey(entry)] = &entry;
  }
  out->append("{\n");
  bool first_entry = true;
  for (const auto& [k, entry] : entries) {
    if (!first_entry) out->append(",\n");
    first_entry = false;
    absl::StrAppend(out, pad, "  ");
    AppendJsonString(k, out);
    out->append(": ");
    AppendJsonValue(*entry, entry->GetDescriptor()->map_value(), -1, indent + 4, out);
  }
  absl::StrAppend(out, "\n", pad, "}");
}

// Repeated field `f` of `m` (a member of an object indented by `indent`) as a
// JSON array.
void AppendJsonArray(const pb::Message& m, const pb::FieldDescriptor* f, int indent,
                     std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  const int n = r->FieldSize(m, f);
  if (n == 0) {
    out->append("[]");
    return;
  }
  out->append("[\n");
  for (int j = 0; j < n; ++j) {
    if (j > 0) out->append(",\n");
    absl::StrAppend(out, pad, "  ");
    AppendJsonValue(m, f, j, indent + 4, out);
  }
  absl::StrAppend(out, "\n", pad, "]");
}

void AppendJsonMessage(const pb::Message& m, int indent, std::string* out) {
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  const std::string pad(indent + 2, ' ');
  bool first = true;
  auto key = [&](absl::string_view name) {
    out->append(first ? "{\n" : ",\n");
    first = false;
    out->append(pad);
    AppendJsonString(name, out);
    out->append(": ");
  };
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    // Like the proto3 JSON mapping with always_print_primitive_fields:
    // singular messages and oneof members only when set; the rest always.
    if (!f->is_repeated() &&
        (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE ||
         f->containing_oneof() != nullptr) &&
        !r->HasField(m, f)) {
      continue;
    }
    key(f->name());
    if (f->is_map()) {
      AppendJsonMap(m, f, indent, out);
    } else if (f->is_repeated()) {
      AppendJsonArray(m, f, indent, out);
    } else {
      AppendJsonValue(m, f, -1, indent + 2, out);
      if (IsEpochMillis(f)) {
        // The same instant for people and for kubectl-style tools.
        const int64_t ms = r->GetInt64(m, f);
        key(absl::StripSuffix(f->name(), "_ms"));
        if (ms == 0) {
          out->append("null");
        } else {
          AppendJsonString(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms),
                                            absl::UTCTimeZone()),
                           out);
        }
      }
    }
  }
  if (first) {
    out->append("{}");
  } else {
    absl::StrAppend(out, "\n", std::string(indent, ' '), "}");
  }
}

}  // namespace

std::string MessageToJson(const google::protobuf::Message& message) {
  std::string out;
  AppendJsonMessage(message, 0, &out);
  return out;
}

}  // namespace client
}  // namespace iommu
