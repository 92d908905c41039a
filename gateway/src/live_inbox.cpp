#include "live_inbox.hpp"

#include <boost/asio/execution/context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <utility>

#include "session.hpp"

namespace agentwire::gateway {

LiveInbox& LiveInbox::For(const boost::asio::any_io_executor& executor) {
  return boost::asio::use_service<LiveInbox>(
      boost::asio::query(executor, boost::asio::execution::context));
}

void LiveInbox::DeliverLive(std::shared_ptr<Session> session,
                            const boost::asio::any_io_executor& executor, LogEntryPtr entry) {
  Deliver({std::move(session), std::move(entry), 0}, executor);
}

void LiveInbox::DeliverTailStarted(std::shared_ptr<Session> session,
                                   const boost::asio::any_io_executor& executor,
                                   int64_t start_offset) {
  Deliver({std::move(session), nullptr, start_offset}, executor);
}

void LiveInbox::Deliver(Item item, const boost::asio::any_io_executor& executor) {
  {
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(item));
    if (std::exchange(drain_posted_, true)) return;
  }
  // Any executor of this io_context runs the drain on its thread.
  boost::asio::post(executor, [this] { Drain(); });
}

void LiveInbox::Drain() {
  std::vector<Item> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(pending_);
    drain_posted_ = false;
  }
  for (auto& item : batch) {
    if (item.entry) {
      item.session->HandleLive(item.entry);
    } else {
      item.session->HandleTailStarted(item.tail_start);
    }
  }
}

void LiveInbox::shutdown() {
  std::lock_guard lock(mutex_);
  pending_.clear();
}

}  // namespace agentwire::gateway
