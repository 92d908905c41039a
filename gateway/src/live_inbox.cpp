#include "live_inbox.hpp"

#include <boost/asio/execution/context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <utility>

#include "session.hpp"

namespace agentwire::gateway {

LiveInbox& LiveInbox::For(const boost::asio::any_io_executor& executor) {
  auto& inbox = boost::asio::use_service<LiveInbox>(
      boost::asio::query(executor, boost::asio::execution::context));
  std::lock_guard lock(inbox.mutex_);
  if (!inbox.executor_) inbox.executor_ = executor;
  return inbox;
}

void LiveInbox::DeliverLive(std::shared_ptr<Session> session, LogEntryPtr entry) {
  Deliver({std::move(session), std::move(entry), 0});
}

void LiveInbox::DeliverTailStarted(std::shared_ptr<Session> session, int64_t start_offset) {
  Deliver({std::move(session), nullptr, start_offset});
}

void LiveInbox::Deliver(Item item) {
  boost::asio::any_io_executor executor;
  {
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(item));
    if (std::exchange(drain_posted_, true)) return;
    executor = executor_;
  }
  boost::asio::post(executor, [this] { Drain(); });
}

void LiveInbox::Drain() {
  {
    std::lock_guard lock(mutex_);
    draining_.swap(pending_);
    drain_posted_ = false;
  }
  for (auto& item : draining_) {
    if (item.entry) {
      item.session->HandleLive(item.entry);
    } else {
      item.session->HandleTailStarted(item.tail_start);
    }
  }
  draining_.clear();
  // A burst (a partition's tail starting for thousands of sessions) must not pin its
  // storage for the life of the process.
  constexpr std::size_t kKeptItems = 4096;
  if (draining_.capacity() > kKeptItems) std::vector<Item>().swap(draining_);
}

void LiveInbox::shutdown() {
  std::lock_guard lock(mutex_);
  pending_.clear();
  draining_.clear();
}

}  // namespace agentwire::gateway
