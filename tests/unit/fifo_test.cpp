// Fifo: the session's send and catch-up queues. Order, release of popped items, compaction
// after long runs, and giving memory back after a burst.
#include "fifo.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <random>

namespace agentwire::gateway {
namespace {

TEST(Fifo, KeepsOrderThroughCompactionAndRefills) {
  Fifo<int> fifo;
  std::deque<int> model;
  std::mt19937 random(7);
  int next = 0;
  // Long enough to cross the compaction threshold (1,024 popped slots) many times, with the
  // queue sometimes draining completely and sometimes holding thousands.
  for (int step = 0; step < 200'000; ++step) {
    const bool push = model.empty() || random() % 100 < (step / 20'000 % 2 == 0 ? 55 : 45);
    if (push) {
      fifo.push_back(next);
      model.push_back(next++);
    } else {
      ASSERT_EQ(fifo.front(), model.front()) << "step " << step;
      fifo.pop_front();
      model.pop_front();
    }
    ASSERT_EQ(fifo.size(), model.size());
    ASSERT_EQ(fifo.empty(), model.empty());
  }
}

TEST(Fifo, PopReleasesTheItemAtOnce) {
  Fifo<std::shared_ptr<int>> fifo;
  auto first = std::make_shared<int>(1);
  std::weak_ptr<int> watch = first;
  fifo.push_back(std::move(first));
  fifo.push_back(std::make_shared<int>(2));
  fifo.pop_front();
  EXPECT_TRUE(watch.expired()) << "a popped frame must not stay alive until compaction";
  EXPECT_EQ(*fifo.front(), 2);
}

TEST(Fifo, MoveLeavesTheSourceEmpty) {
  Fifo<int> a;
  a.push_back(1);
  a.push_back(2);
  a.pop_front();
  Fifo<int> b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b.front(), 2);
  a.push_back(3);
  b = std::move(a);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b.front(), 3);
}

TEST(Fifo, ClearEmptiesAndTheQueueIsReusable) {
  Fifo<int> fifo;
  for (int i = 0; i < 10'000; ++i) fifo.push_back(i);
  for (int i = 0; i < 5'000; ++i) fifo.pop_front();
  fifo.clear();
  EXPECT_TRUE(fifo.empty());
  EXPECT_EQ(fifo.size(), 0u);
  fifo.push_back(42);
  EXPECT_EQ(fifo.front(), 42);
}

}  // namespace
}  // namespace agentwire::gateway
