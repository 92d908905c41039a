#pragma once

// Checks on an event's text shared by archive and analytics. Private to agentwire_consumers.

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <string>
#include <vector>

namespace agentwire::consumers::internal {

/// True when any string field of `message` (nested messages and map entries included; bytes
/// fields excluded) holds U+0000, which PostgreSQL text and jsonb cannot store. Checks the
/// strings themselves: the JSON text would confuse an escaped backslash followed by "u0000"
/// with a NUL.
inline bool HasNulCharacter(const google::protobuf::Message& message) {
  using google::protobuf::FieldDescriptor;
  const auto* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  std::string scratch;
  for (const auto* field : fields) {
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING &&
        field->type() != FieldDescriptor::TYPE_BYTES) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          const auto& value = reflection->GetRepeatedStringReference(message, field, i, &scratch);
          if (value.find('\0') != std::string::npos) return true;
        }
      } else if (reflection->GetStringReference(message, field, &scratch).find('\0') !=
                 std::string::npos) {
        return true;
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          if (HasNulCharacter(reflection->GetRepeatedMessage(message, field, i))) return true;
        }
      } else if (HasNulCharacter(reflection->GetMessage(message, field))) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace agentwire::consumers::internal
