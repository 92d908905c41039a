#include "support/test_paths.hpp"

namespace agentwire::testing {

std::string AgentwireBinary() { return AGENTWIRE_BINARY; }
std::string SourceDir() { return AGENTWIRE_SOURCE_DIR; }

}  // namespace agentwire::testing
