// The SSE text of each kind of frame the session writes (DESIGN.md "Other transports").
#include <gtest/gtest.h>

#include "frames.hpp"
#include "sse_transport.hpp"

namespace agentwire::gateway {
namespace {

TEST(SseFrames, EventFrameBecomesIdEventAndTheEventObjectAsData) {
  const std::string frame =
      R"({"type":"event","cursor":"AQAAAAFh","event":{"event_id":"e1","type":"agent_started"}})";
  EXPECT_EQ(SseEventText(frame, FrameKind::kEvent),
            "id: AQAAAAFh\nevent: event\ndata: "
            R"({"event_id":"e1","type":"agent_started"})"
            "\n\n");
}

TEST(SseFrames, ReadyCarriesItsCursorAsIdAndLosesTheTypeField) {
  EXPECT_EQ(SseEventText(ReadyFrame("CUR", 3), FrameKind::kControl),
            "id: CUR\nevent: ready\ndata: "
            R"({"cursor":"CUR","replayed":3})"
            "\n\n");
}

TEST(SseFrames, ResetHasNoIdAndKeepAliveIsAComment) {
  EXPECT_EQ(SseEventText(ResetFrame(kResetCatchupLimit), FrameKind::kControl),
            "event: reset\ndata: "
            R"({"reason":"catchup_limit"})"
            "\n\n");
  EXPECT_EQ(SseEventText(R"({"type":"bye"})", FrameKind::kControl), "event: bye\ndata: {}\n\n");
  EXPECT_EQ(SseEventText("", FrameKind::kKeepAlive), ": keep-alive\n\n");
}

}  // namespace
}  // namespace agentwire::gateway
