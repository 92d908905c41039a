#include <gtest/gtest.h>

#include "agentwire/schemas/event_json.hpp"

TEST(EventJson, Placeholder) { EXPECT_EQ(agentwire::schemas::KnownEventTypes().size(), 7U); }
