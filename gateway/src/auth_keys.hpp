#pragma once

// Private to auth*.cpp: base64url and the JWKS loader.

#include <openssl/evp.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentwire::gateway::auth_detail {

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

enum class KeyType { kRsa, kEcP256 };

/// A public key from the JWKS file, usable only with the algorithm of its type
/// (kRsa -> RS256, kEcP256 -> ES256).
struct JwksKey {
  std::string kid;  // may be empty: then it can only be chosen as the sole key of its type
  KeyType type = KeyType::kRsa;
  PkeyPtr key;
  int bits = 0;
};

/// Keys that were left out on purpose (other algorithms, "use": "enc", other key types),
/// described for the start-up log.
struct JwksLoad {
  std::vector<JwksKey> keys;
  std::vector<std::string> skipped;
};

/// Reads and converts a JWKS file ({"keys": [...]}). Throws ConfigError naming the
/// variable, the file, the key (index and kid) and the reason; also when no usable key remains.
JwksLoad LoadJwksFile(const std::string& path);
/// Same for JWKS text; `source` names it in error messages.
JwksLoad ParseJwks(std::string_view text, std::string_view source);

/// Base64url without padding (RFC 7515 section 2). Strict: rejects other characters,
/// impossible lengths and non-canonical trailing bits. `allow_padding` also accepts trailing
/// '=' (some tools write JWKs that way).
std::optional<std::string> DecodeBase64Url(std::string_view text, bool allow_padding = false);

/// At most `limit` characters of untrusted text, printable ASCII only, for messages.
std::string Printable(std::string_view text, size_t limit = 64);

}  // namespace agentwire::gateway::auth_detail
