#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace agentwire::gateway {

/// How the gateway checks the JWT on a WebSocket upgrade. At least one of `hs256_secret`
/// and `jwks_file` must be set; each enables its own algorithms only.
struct AuthConfig {
  /// AGENTWIRE_JWT_SECRET: enables HS256; at least 32 bytes.
  std::string hs256_secret;
  /// AGENTWIRE_JWKS_FILE: enables RS256 / ES256 with the public keys of this JWKS file (by kid).
  std::string jwks_file;
  /// AGENTWIRE_JWT_ISSUER: when non-empty, iss must equal it.
  std::string issuer;
  /// AGENTWIRE_JWT_AUDIENCE: when non-empty, aud (a string or an array) must contain it;
  /// kAnyAudience turns the check off explicitly.
  std::string audience;
  /// Clock skew allowed for exp / nbf / iat (0..3600 s).
  std::chrono::seconds leeway{30};

  /// A server's start-up checks: with a JWKS file (an identity provider's keys sign tokens
  /// for all of its applications) `audience` must be set, to agentwire's audience or to
  /// kAnyAudience. Throws ConfigError naming --jwt-audience / AGENTWIRE_JWT_AUDIENCE.
  void Validate() const;
};

/// The --jwt-audience value that accepts a token for any audience.
inline constexpr std::string_view kAnyAudience = "any";

/// The outcome of one verification. On failure `error_code` is a stable machine code for the
/// 401 body ({"error": error_code, "message": message}):
///   token_missing        no token in the request
///   token_invalid        malformed (not three parts, bad base64url, bad JSON, bad claim types,
///                        no exp, an exp after 2255-03-14, crit header, too long)
///   token_algorithm      alg not accepted: "none", anything but HS256/RS256/ES256, HS256
///                        without a secret, RS256/ES256 without a JWKS key of that type, or a
///                        kid naming a key of another type
///   token_unknown_key    kid names no JWKS key, or no kid while several keys could match
///   token_signature      the signature does not verify
///   token_expired        exp (plus leeway) has passed
///   token_not_yet_valid  nbf or iat (minus leeway) lies in the future
///   token_issuer         iss differs from the configured issuer
///   token_audience       aud does not contain the configured audience
///   token_no_subject     sub missing, not a string, empty, too long or with control characters
/// `message` is human text for the same failure; it never contains the token.
struct AuthResult {
  bool ok = false;
  std::string user_id;     // the token's sub (only when ok)
  double expires_at = 0;   // the token's exp, seconds since the epoch (only when ok)
  std::string error_code;  // empty when ok
  std::string message;     // empty when ok
};

/// Verifies JWTs against a fixed set of keys.
///
/// The key is chosen from the header's alg and kid by the verifier itself, from the keys of
/// the matching type only (HS256 -> the secret, RS256 -> JWKS RSA keys, ES256 -> JWKS P-256
/// keys), before any signature check: a token can never make a public key act as an HMAC
/// secret, and "none" is never accepted. Keys in the token header (jwk, jku, x5u) are ignored.
///
/// Immutable after construction, so Verify is thread-safe; copies share the loaded keys.
class TokenVerifier final {
 public:
  /// Throws ConfigError (one line naming the variable and the fix) when neither a secret nor a
  /// JWKS file is given, the secret is shorter than 32 bytes, or the JWKS file is unreadable,
  /// not JSON, or holds a key that cannot be used (naming the key and why).
  explicit TokenVerifier(AuthConfig config);
  ~TokenVerifier();
  TokenVerifier(const TokenVerifier& other);
  TokenVerifier& operator=(const TokenVerifier& other);
  TokenVerifier(TokenVerifier&& other) noexcept;
  TokenVerifier& operator=(TokenVerifier&& other) noexcept;

  [[nodiscard]] AuthResult Verify(
      std::string_view token,
      std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;

  /// One line for the start-up log, e.g. "HS256; JWKS 2 keys (RS256 kid=a, ES256 kid=b);
  /// iss=https://idp; aud=agentwire; leeway=30s". Never contains the secret.
  [[nodiscard]] std::string Describe() const;

 private:
  struct Keys;
  std::shared_ptr<const Keys> keys_;
};

/// Dev/test only: HS256 token with sub=user, iat=now, exp=now+ttl, and iss/aud when non-empty.
/// Throws ConfigError for an empty user, a secret shorter than 32 bytes or a ttl below 1 s.
[[nodiscard]] std::string MintHs256Token(std::string_view secret, std::string_view user,
                                         std::chrono::seconds ttl, std::string_view issuer = {},
                                         std::string_view audience = {});

/// The WebSocket subprotocol that carries a token where no proxy logs it: a client offers
/// `Sec-WebSocket-Protocol: agentwire.bearer, <jwt>` (browsers: `new WebSocket(url,
/// ["agentwire.bearer", jwt])`), and the gateway answers with `agentwire.bearer` alone, never
/// the token. See docs/protocol.md.
inline constexpr std::string_view kBearerSubprotocol = "agentwire.bearer";

/// The subprotocol the handshake response must name in its Sec-WebSocket-Protocol header for
/// a request that sent `protocol_header`: kBearerSubprotocol when the client offered it, empty
/// otherwise (then the response carries no such header, as RFC 6455 4.2.2 requires).
[[nodiscard]] std::string_view AcceptedSubprotocol(std::string_view protocol_header);

/// Finds the token in an HTTP upgrade request, in this order: the "Authorization: Bearer
/// <jwt>" header value (scheme case-insensitive); the entry after kBearerSubprotocol in the
/// Sec-WebSocket-Protocol header; the first access_token= query parameter of the request
/// target, percent-decoded. Returns empty when none is present.
[[nodiscard]] std::string ExtractToken(std::string_view authorization_header,
                                       std::string_view request_target,
                                       std::string_view protocol_header = {});

/// The request target for logs: the value of every secret-looking query parameter (access_token,
/// token, id_token, jwt, *secret*, *password*, *key*, *auth*, ...) and every value shaped like a
/// JWT is replaced by "REDACTED". Other parameters are kept as sent.
[[nodiscard]] std::string RedactTarget(std::string_view request_target);

}  // namespace agentwire::gateway
