#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <memory>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/gateway/auth.hpp"
#include "commands.hpp"

namespace agentwire::cli {

CommandAction RegisterTokenCommand(CLI::App& app) {
  struct Options {
    std::string user;
    std::string secret;
    std::string ttl = "24h";
    std::string issuer;
    std::string audience;
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "token",
      "DEV/TEST ONLY: mint an HS256 JWT for a user and print it on stdout. Production tokens "
      "come from your identity provider (verified with AGENTWIRE_JWKS_FILE).");
  cmd->add_option("--user", options->user, "The user id (the token's sub)");
  cmd->add_option("--secret", options->secret,
                  "HS256 secret, at least 32 bytes; prefer the variable (flags show up in ps)")
      ->envname("AGENTWIRE_JWT_SECRET");
  cmd->add_option("--ttl", options->ttl, "Lifetime, e.g. 15m, 24h")->capture_default_str();
  cmd->add_option("--issuer", options->issuer, "iss claim (when the gateway requires one)")
      ->envname("AGENTWIRE_JWT_ISSUER");
  cmd->add_option("--audience", options->audience, "aud claim (when the gateway requires one)")
      ->envname("AGENTWIRE_JWT_AUDIENCE");

  return [options]() -> int {
    if (options->user.empty()) throw ConfigError("--user is required (the token's sub)");
    if (options->secret.empty()) {
      throw ConfigError("no secret: pass --secret or set AGENTWIRE_JWT_SECRET (the gateway's)");
    }
    const auto ttl =
        std::chrono::duration_cast<std::chrono::seconds>(ParseDuration(options->ttl, "--ttl"));
    // A year bounds the damage of a leaked dev token, and keeps exp far from overflow.
    if (ttl > std::chrono::hours(24 * 366)) throw ConfigError("--ttl: at most 8784h (a year)");
    std::cout << gateway::MintHs256Token(options->secret, options->user, ttl, options->issuer,
                                         options->audience)
              << '\n';
    return kExitOk;
  };
}

}  // namespace agentwire::cli
