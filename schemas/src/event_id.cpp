#include <array>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::schemas {

std::string NewEventId() {
  static constexpr std::array<char, 32> kCrockford = {
      '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F',
      'G', 'H', 'J', 'K', 'M', 'N', 'P', 'Q', 'R', 'S', 'T', 'V', 'W', 'X', 'Y', 'Z'};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto millis = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  const uint64_t random_high = rng() & 0xFFFF;  // 16 bits
  const uint64_t random_low = rng();            // 64 bits
  std::string id(26, '0');
  // 10 characters of time (50 bits, top 2 always zero), then 16 of randomness (80 bits).
  for (int i = 9; i >= 0; --i)
    id[static_cast<size_t>(i)] = kCrockford[(millis >> ((9 - i) * 5)) & 31];
  // 80 random bits = random_high (16) followed by random_low (64).
  for (int i = 0; i < 16; ++i) {
    const int shift = (15 - i) * 5;  // bit offset from the least significant end
    uint64_t chunk = 0;
    if (shift >= 64) {
      chunk = random_high >> (shift - 64);
    } else if (shift + 5 > 64) {
      chunk = (random_low >> shift) | (random_high << (64 - shift));
    } else {
      chunk = random_low >> shift;
    }
    id[10 + static_cast<size_t>(i)] = kCrockford[chunk & 31];
  }
  return id;
}

}  // namespace agentwire::schemas
