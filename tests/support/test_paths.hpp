#pragma once

#include <string>

namespace agentwire::testing {

/// Absolute path of the built `agentwire` executable.
std::string AgentwireBinary();
/// The repository root.
std::string SourceDir();

}  // namespace agentwire::testing
