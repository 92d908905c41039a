#include "agentwire/core/errors.hpp"
