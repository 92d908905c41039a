#pragma once

// Keys and hand-made JWTs for tests that play an identity provider (RS256 tokens from a
// JWKS) or an attacker (alg none, HS256 signed with a public key, forged signatures). Built on
// OpenSSL directly, independent of the gateway's verifier.

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace agentwire::testing {

std::string Base64Url(std::string_view bytes);

/// An RSA-2048 key pair generated at run time (~100 ms; make one per test binary).
class RsaTestKey final {
 public:
  RsaTestKey();
  ~RsaTestKey();
  RsaTestKey(const RsaTestKey&) = delete;
  RsaTestKey& operator=(const RsaTestKey&) = delete;

  /// "-----BEGIN PUBLIC KEY-----..." (SubjectPublicKeyInfo PEM).
  std::string PublicPem() const;
  /// The public key as a JWK object {"kty":"RSA","n":..,"e":..[,"kid":..]}.
  nlohmann::json Jwk(const std::string& kid = {}) const;
  /// A compact JWS signed with RS256 over `header` (alg is set to RS256) and `claims`.
  std::string SignRs256(nlohmann::json header, const nlohmann::json& claims) const;

 private:
  struct Key;
  std::unique_ptr<Key> key_;
};

/// A compact JWS with exactly `header` and `claims`, HMAC-SHA256-signed with `key` (any bytes:
/// a public key's PEM text, a JWK's JSON, a wrong secret).
std::string HandMadeHs256(const nlohmann::json& header, const nlohmann::json& claims,
                          std::string_view key);

/// `header.claims.` with an empty signature, as `alg: none` tokens are sent.
std::string UnsignedToken(const nlohmann::json& header, const nlohmann::json& claims);

/// {"sub": user, "iat": now-10s, "exp": now+ttl_seconds} plus iss/aud when non-empty.
nlohmann::json TestClaims(const std::string& user, long ttl_seconds = 600,
                          const std::string& issuer = {}, const std::string& audience = {});

}  // namespace agentwire::testing
