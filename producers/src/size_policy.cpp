#include "agentwire/producers/size_policy.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace agentwire::producers {
namespace {

struct Text {
  const char* name;  // the JSON field name
  std::string* value;
};

// The body's free-text fields: the ones an agent fills with pages, files and long thoughts.
// Names and ids (tool_name, tool_call_id, model, error_code) are short and stay whole.
std::vector<Text> BodyTexts(v1::AgentEvent& event) {
  switch (event.body_case()) {
    case v1::AgentEvent::kAgentStarted:
      return {{"input", event.mutable_agent_started()->mutable_input()}};
    case v1::AgentEvent::kAgentThinking:
      return {{"text", event.mutable_agent_thinking()->mutable_text()}};
    case v1::AgentEvent::kToolExecuting:
      return {{"input", event.mutable_tool_executing()->mutable_input()}};
    case v1::AgentEvent::kToolCompleted:
      return {{"output", event.mutable_tool_completed()->mutable_output()},
              {"error", event.mutable_tool_completed()->mutable_error()}};
    case v1::AgentEvent::kAgentCompleted:
      return {{"result", event.mutable_agent_completed()->mutable_result()}};
    case v1::AgentEvent::kAgentFailed:
      return {{"message", event.mutable_agent_failed()->mutable_message()}};
    case v1::AgentEvent::kMessageDelta:
      return {{"text", event.mutable_message_delta()->mutable_text()}};
    default:
      return {};
  }
}

// Cuts `text` to at most `size` bytes without splitting a UTF-8 character (protobuf rejects a
// string field that is not valid UTF-8).
void CutAtCharacterBoundary(std::string& text, size_t size) {
  if (text.size() <= size) return;
  while (size > 0 && (static_cast<unsigned char>(text[size]) & 0xC0) == 0x80) --size;
  text.resize(size);
}

// The largest size every text may keep so that together they need at most `budget` bytes,
// the shorter ones staying whole ("water filling").
size_t CapFor(std::vector<size_t> sizes, size_t budget) {
  std::sort(sizes.begin(), sizes.end());
  size_t remaining = budget;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const size_t share = remaining / (sizes.size() - i);
    if (sizes[i] > share) return share;
    remaining -= sizes[i];
  }
  return sizes.empty() ? 0 : sizes.back();
}

// An upper bound for what the Truncation record adds: its tag and length, two field names
// (at most 7 bytes each, plus tag and length), and two uint32 varints with their tags.
constexpr size_t kRecordBytes = 3 + 2 * 9 + 2 * 6;

}  // namespace

bool FitToSize(v1::AgentEvent& event, size_t max_bytes) {
  const size_t original = event.ByteSizeLong();
  if (original <= max_bytes) return true;

  uint32_t first_original = 0;  // an event cut before (e.g. re-published) keeps its first size
  if (event.has_truncated()) first_original = event.truncated().original_bytes();
  auto texts = BodyTexts(event);
  size_t text_bytes = 0;
  std::vector<size_t> sizes;
  for (const auto& text : texts) {
    text_bytes += text.value->size();
    sizes.push_back(text.value->size());
  }
  const size_t envelope = original - text_bytes + (event.has_truncated() ? 0 : kRecordBytes);
  if (envelope >= max_bytes) return false;

  v1::Truncation record;
  size_t budget = max_bytes - envelope;
  // The length prefixes shrink with the texts, so one pass nearly always fits; the loop only
  // guards the estimate.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const size_t cap = CapFor(sizes, budget);
    record.clear_fields();
    for (auto& text : texts) {
      if (text.value->size() > cap) {
        CutAtCharacterBoundary(*text.value, cap);
      }
    }
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i].value->size() < sizes[i]) record.add_fields(texts[i].name);
    }
    record.set_original_bytes(first_original != 0 ? first_original
                                                  : static_cast<uint32_t>(original));
    record.set_limit_bytes(static_cast<uint32_t>(max_bytes));
    *event.mutable_truncated() = record;
    const size_t now = event.ByteSizeLong();
    if (now <= max_bytes) return true;
    const size_t over = now - max_bytes;
    if (budget <= over) break;
    budget -= over;
  }
  return false;
}

}  // namespace agentwire::producers
