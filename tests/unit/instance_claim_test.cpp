// --instance-id: the name a consumer process's group.instance.id is made of. Two processes of
// one group on one host never get the same name (the broker would fence one of them), and a
// process gets its name back once the previous holder is gone, however it ended.
#include <gtest/gtest.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "agentwire/consumers/service.hpp"
#include "agentwire/core/errors.hpp"

namespace agentwire::consumers {
namespace {

// A group of this test process only: parallel test runs must not see each other's claims.
std::string Group(const std::string& name) {
  return "instance-claim-test-" + std::to_string(::getpid()) + "-" + name;
}

std::string Host() {
  char name[256] = "";
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

TEST(InstanceClaim, DefaultIsTheHostNameThenNumberedForMoreProcessesOfTheGroup) {
  const auto group = Group("default");
  const auto first = InstanceClaim::Acquire(group, std::nullopt);
  EXPECT_EQ(first.Id(), Host());
  const auto second = InstanceClaim::Acquire(group, std::nullopt);
  EXPECT_EQ(second.Id(), Host() + "-2");
  // Another group on the same host (archive and analytics) gets the host name too.
  EXPECT_EQ(InstanceClaim::Acquire(Group("other"), std::nullopt).Id(), Host());
}

TEST(InstanceClaim, ANameComesBackOnceItsHolderIsGone) {
  const auto group = Group("back");
  std::optional<InstanceClaim> first = InstanceClaim::Acquire(group, std::nullopt);
  const auto second = InstanceClaim::Acquire(group, std::nullopt);
  first.reset();  // the process that held it died
  EXPECT_EQ(InstanceClaim::Acquire(group, std::nullopt).Id(), Host());
  EXPECT_EQ(second.Id(), Host() + "-2");
}

TEST(InstanceClaim, AnExplicitNameHeldByAnotherProcessOfTheGroupIsRefused) {
  const auto group = Group("explicit");
  const auto held = InstanceClaim::Acquire(group, std::string("archive-a"));
  EXPECT_EQ(held.Id(), "archive-a");
  EXPECT_THROW(InstanceClaim::Acquire(group, std::string("archive-a")), ConfigError);
  EXPECT_EQ(InstanceClaim::Acquire(group, std::string("archive-b")).Id(), "archive-b");
}

TEST(InstanceClaim, EmptyMeansDynamicMembershipAndBadCharactersAreRefused) {
  EXPECT_EQ(InstanceClaim::Acquire(Group("empty"), std::string()).Id(), "");
  EXPECT_THROW(InstanceClaim::Acquire(Group("bad"), std::string("a/b")), ConfigError);
  EXPECT_THROW(InstanceClaim::Acquire(Group("bad"), std::string(201, 'a')), ConfigError);
}

}  // namespace
}  // namespace agentwire::consumers
