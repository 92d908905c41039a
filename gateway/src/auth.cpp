#include "agentwire/gateway/auth.hpp"

#include <fmt/format.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"
#include "auth_keys.hpp"
#include "url.hpp"

namespace agentwire::gateway {

using auth_detail::DecodeBase64Url;
using auth_detail::JwksKey;
using auth_detail::KeyType;
using auth_detail::Printable;

namespace {

constexpr size_t kMinSecretBytes = 32;
// Far above any real token; bounds the work an unauthenticated request can cause.
constexpr size_t kMaxTokenBytes = size_t{16} * 1024;
// sub becomes the Kafka key and a log field: keep it short and printable.
constexpr size_t kMaxSubjectBytes = 256;
constexpr std::chrono::seconds kMaxLeeway{3600};
constexpr size_t kHs256Bytes = 32;
constexpr size_t kP256CoordinateBytes = 32;

enum class Alg { kHs256, kRs256, kEs256 };

const char* AlgName(Alg alg) {
  switch (alg) {
    case Alg::kHs256:
      return "HS256";
    case Alg::kRs256:
      return "RS256";
    case Alg::kEs256:
      return "ES256";
  }
  return "?";
}

KeyType KeyTypeFor(Alg alg) { return alg == Alg::kRs256 ? KeyType::kRsa : KeyType::kEcP256; }

const char* KeyTypeName(KeyType type) { return type == KeyType::kRsa ? "RSA" : "EC P-256"; }

AuthResult Fail(std::string code, std::string message) {
  AuthResult result;
  result.error_code = std::move(code);
  result.message = std::move(message);
  return result;
}

std::string FormatTime(double seconds_since_epoch) {
  if (!std::isfinite(seconds_since_epoch) || std::abs(seconds_since_epoch) > 1e12) {
    return fmt::format("{}", seconds_since_epoch);
  }
  const auto seconds = static_cast<std::time_t>(std::floor(seconds_since_epoch));
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text.data();
}

// RFC 7519 NumericDate: a JSON number of seconds (fractions allowed). nullopt when absent;
// throws std::invalid_argument when present but not a number.
std::optional<double> NumericDate(const nlohmann::json& payload, const char* claim) {
  const auto it = payload.find(claim);
  if (it == payload.end()) return std::nullopt;
  if (!it->is_number()) throw std::invalid_argument(fmt::format("{} is not a number", claim));
  return it->get<double>();
}

bool HasControlCharacter(std::string_view text) {
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) return true;
  }
  return false;
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};

bool DigestVerifySha256(EVP_PKEY* key, std::string_view signing_input,
                        const unsigned char* signature, size_t signature_size) {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  const bool ok = ctx &&
                  EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx.get(), signature, signature_size,
                                   reinterpret_cast<const unsigned char*>(signing_input.data()),
                                   signing_input.size()) == 1;
  // Failed verifications leave entries in this thread's OpenSSL error queue.
  ERR_clear_error();
  return ok;
}

bool VerifyHs256(std::string_view secret, std::string_view signing_input,
                 std::string_view signature) {
  if (signature.size() != kHs256Bytes) return false;
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_size = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(),
           mac.data(), &mac_size) == nullptr ||
      mac_size != kHs256Bytes) {
    ERR_clear_error();
    return false;
  }
  return CRYPTO_memcmp(mac.data(), signature.data(), kHs256Bytes) == 0;
}

bool VerifyRs256(EVP_PKEY* key, std::string_view signing_input, std::string_view signature) {
  // RFC 7518 3.3: the signature is exactly as long as the modulus.
  if (signature.size() != static_cast<size_t>(EVP_PKEY_get_size(key))) return false;
  return DigestVerifySha256(key, signing_input,
                            reinterpret_cast<const unsigned char*>(signature.data()),
                            signature.size());
}

bool VerifyEs256(EVP_PKEY* key, std::string_view signing_input, std::string_view signature) {
  // JWS carries R || S (RFC 7518 3.4); OpenSSL verifies the DER form.
  if (signature.size() != 2 * kP256CoordinateBytes) return false;
  const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(raw, kP256CoordinateBytes, nullptr);
  BIGNUM* s = BN_bin2bn(raw + kP256CoordinateBytes, kP256CoordinateBytes, nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    ERR_clear_error();
    return false;
  }
  unsigned char* der = nullptr;
  const int der_size = i2d_ECDSA_SIG(sig, &der);
  const bool ok =
      der_size > 0 && DigestVerifySha256(key, signing_input, der, static_cast<size_t>(der_size));
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return ok;
}

std::optional<nlohmann::json> DecodeJsonObject(std::string_view segment) {
  const auto bytes = DecodeBase64Url(segment);
  if (!bytes) return std::nullopt;
  auto value = nlohmann::json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) return std::nullopt;
  return value;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string LowerCopy(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = Lower(c);
  return out;
}

bool IsSecretName(std::string_view name) {
  const std::string lower = LowerCopy(PercentDecode(name, UrlPart::kQuery));
  for (const char* marker :
       {"token", "secret", "passw", "jwt", "auth", "key", "signature", "credential"}) {
    if (lower.find(marker) != std::string::npos) return true;
  }
  return false;
}

bool IsBase64UrlOrDot(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '%';
}

// Every JWT starts with "eyJ" (the base64url of '{"') and has dots (maybe as %2E) between its
// parts: such runs are replaced, wherever they are.
std::string ScrubJwtShapes(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = text.find("eyJ", i);
    if (start == std::string::npos) break;
    size_t end = start;
    while (end < text.size() && IsBase64UrlOrDot(text[end])) ++end;
    const std::string run = LowerCopy(std::string_view(text).substr(start, end - start));
    out.append(text, i, start - i);
    if (run.find('.') != std::string::npos || run.find("%2e") != std::string::npos) {
      out += "REDACTED";
    } else {
      out.append(text, start, end - start);
    }
    i = end;
  }
  if (i < text.size()) out.append(text, i, std::string::npos);
  return out;
}

// name=value pieces separated by '&' or ';' ('#' should never reach a server, but if it does
// what follows is treated the same way). Secret-looking names get their value replaced.
void AppendRedactedParams(std::string_view params, std::string& out) {
  size_t begin = 0;
  while (begin <= params.size()) {
    const size_t end = params.find_first_of("&;#", begin);
    const std::string_view piece =
        params.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
    const size_t equals = piece.find('=');
    if (equals != std::string_view::npos && IsSecretName(piece.substr(0, equals))) {
      out += piece.substr(0, equals + 1);
      out += "REDACTED";
    } else {
      out += piece;
    }
    if (end == std::string_view::npos) break;
    out.push_back(params[end]);
    begin = end + 1;
  }
}

}  // namespace

struct TokenVerifier::Keys {
  AuthConfig config;
  std::vector<JwksKey> jwks;
  std::vector<std::string> skipped;
};

void AuthConfig::Validate() const {
  // Here too (not only in TokenVerifier), so a bad --jwt-leeway fails at start, before Kafka.
  if (leeway < std::chrono::seconds::zero() || leeway > kMaxLeeway) {
    throw ConfigError(
        fmt::format("--jwt-leeway / AGENTWIRE_JWT_LEEWAY {}s: must be between 0s "
                    "and {}s",
                    leeway.count(), kMaxLeeway.count()));
  }
  if (!jwks_file.empty() && audience.empty()) {
    throw ConfigError(
        "AGENTWIRE_JWKS_FILE is set but --jwt-audience / AGENTWIRE_JWT_AUDIENCE is not: an "
        "identity provider signs tokens for all of its applications with these keys, so set "
        "the audience it puts in agentwire's tokens (or 'any' to accept tokens issued for any "
        "application)");
  }
}

TokenVerifier::TokenVerifier(AuthConfig config) {
  auto keys = std::make_shared<Keys>();
  if (config.hs256_secret.empty() && config.jwks_file.empty()) {
    throw ConfigError(
        "no token keys: set AGENTWIRE_JWT_SECRET (HS256) and/or AGENTWIRE_JWKS_FILE "
        "(RS256/ES256 public keys)");
  }
  if (!config.hs256_secret.empty() && config.hs256_secret.size() < kMinSecretBytes) {
    throw ConfigError(fmt::format(
        "AGENTWIRE_JWT_SECRET is {} bytes; HS256 needs at least {} (e.g. openssl rand -hex 32)",
        config.hs256_secret.size(), kMinSecretBytes));
  }
  if (config.leeway < std::chrono::seconds::zero() || config.leeway > kMaxLeeway) {
    throw ConfigError(fmt::format("JWT leeway {}s: must be between 0 and {}s",
                                  config.leeway.count(), kMaxLeeway.count()));
  }
  if (!config.jwks_file.empty()) {
    auto load = auth_detail::LoadJwksFile(config.jwks_file);
    keys->jwks = std::move(load.keys);
    keys->skipped = std::move(load.skipped);
    for (const auto& skipped : keys->skipped) {
      log::Warn("JWKS key not used", {{"file", config.jwks_file}, {"error", skipped}});
    }
  }
  keys->config = std::move(config);
  keys_ = std::move(keys);
}

TokenVerifier::~TokenVerifier() = default;
TokenVerifier::TokenVerifier(const TokenVerifier&) = default;
TokenVerifier& TokenVerifier::operator=(const TokenVerifier&) = default;
TokenVerifier::TokenVerifier(TokenVerifier&&) noexcept = default;
TokenVerifier& TokenVerifier::operator=(TokenVerifier&&) noexcept = default;

std::string TokenVerifier::Describe() const {
  const auto& config = keys_->config;
  std::vector<std::string> parts;
  if (!config.hs256_secret.empty()) parts.emplace_back("HS256 (secret)");
  if (!keys_->jwks.empty()) {
    std::vector<std::string> names;
    for (const auto& key : keys_->jwks) {
      names.push_back(fmt::format("{} kid={}", key.type == KeyType::kRsa ? "RS256" : "ES256",
                                  key.kid.empty() ? "-" : Printable(key.kid)));
    }
    parts.push_back(fmt::format("JWKS {} keys ({}{})", keys_->jwks.size(), fmt::join(names, ", "),
                                keys_->skipped.empty()
                                    ? std::string()
                                    : fmt::format("; {} skipped", keys_->skipped.size())));
  }
  parts.push_back(config.issuer.empty() ? "iss any" : "iss=" + config.issuer);
  parts.push_back(config.audience.empty()           ? "aud any"
                  : config.audience == kAnyAudience ? "aud any (explicit)"
                                                    : "aud=" + config.audience);
  parts.push_back(fmt::format("leeway={}s", config.leeway.count()));
  return fmt::format("{}", fmt::join(parts, "; "));
}

namespace {

// Verify's steps, in the order a token is checked. Each returns the failure to answer with, or
// nullopt to go on; the order matters: nothing looks at the payload before the key is chosen,
// and nothing trusts a claim before the signature verified.
using Failure = std::optional<AuthResult>;

// The three base64url segments; the signature covers the first two exactly as sent.
struct TokenParts {
  std::string_view header;
  std::string_view payload;
  std::string_view signature;
  std::string_view signing_input;
};

Failure SplitToken(std::string_view token, TokenParts& parts) {
  if (token.empty()) {
    return Fail("token_missing",
                "no token: send Authorization: Bearer <jwt> or the access_token query parameter");
  }
  if (token.size() > kMaxTokenBytes) {
    return Fail("token_invalid", fmt::format("token is longer than {} bytes", kMaxTokenBytes));
  }
  const size_t first_dot = token.find('.');
  const size_t second_dot =
      first_dot == std::string_view::npos ? std::string_view::npos : token.find('.', first_dot + 1);
  if (second_dot == std::string_view::npos ||
      token.find('.', second_dot + 1) != std::string_view::npos) {
    const auto dots = std::count(token.begin(), token.end(), '.');
    if (dots == 4) return Fail("token_invalid", "encrypted tokens (JWE) are not supported");
    return Fail("token_invalid",
                fmt::format("malformed token: expected 3 dot-separated parts, got {}", dots + 1));
  }
  parts.header = token.substr(0, first_dot);
  parts.payload = token.substr(first_dot + 1, second_dot - first_dot - 1);
  parts.signature = token.substr(second_dot + 1);
  parts.signing_input = token.substr(0, second_dot);
  return std::nullopt;
}

// Only the three algorithms we implement; never "none", never an unknown critical extension.
Failure ReadAlgorithm(const nlohmann::json& header, Alg& alg) {
  const auto alg_it = header.find("alg");
  if (alg_it == header.end() || !alg_it->is_string()) {
    return Fail("token_invalid", "malformed token: the header has no alg");
  }
  const std::string& name = alg_it->get_ref<const std::string&>();
  if (name == "HS256") {
    alg = Alg::kHs256;
  } else if (name == "RS256") {
    alg = Alg::kRs256;
  } else if (name == "ES256") {
    alg = Alg::kEs256;
  } else if (LowerCopy(name) == "none") {
    return Fail("token_algorithm", "unsigned tokens (alg none) are not accepted");
  } else {
    return Fail("token_algorithm", fmt::format("alg {} is not accepted (HS256, RS256, ES256 are)",
                                               Printable(name, 16)));
  }
  if (header.contains("crit")) {
    return Fail("token_invalid", "tokens with critical header extensions (crit) are not supported");
  }
  return std::nullopt;
}

// The key comes from our own configuration, by alg and kid, before the signature is touched:
// each algorithm only ever sees keys of its own type. HS256 uses the shared secret (`key` stays
// null).
Failure SelectKey(Alg alg, const nlohmann::json& header, const AuthConfig& config,
                  const std::vector<JwksKey>& jwks, const EVP_PKEY*& key) {
  if (alg == Alg::kHs256) {
    if (config.hs256_secret.empty()) {
      return Fail("token_algorithm",
                  "HS256 tokens are not accepted here (no shared secret is configured)");
    }
    return std::nullopt;
  }
  const KeyType wanted = KeyTypeFor(alg);
  size_t candidates = 0;
  for (const auto& candidate : jwks) {
    if (candidate.type == wanted) {
      ++candidates;
      key = candidate.key.get();
    }
  }
  if (candidates == 0) {
    return Fail("token_algorithm", fmt::format("{} tokens are not accepted here (no {} key is "
                                               "configured)",
                                               AlgName(alg), KeyTypeName(wanted)));
  }
  const auto kid_it = header.find("kid");
  if (kid_it == header.end()) {
    if (candidates > 1) {
      return Fail("token_unknown_key",
                  fmt::format("the token has no kid and {} {} keys are configured", candidates,
                              KeyTypeName(wanted)));
    }
    return std::nullopt;
  }
  if (!kid_it->is_string()) return Fail("token_invalid", "malformed token: kid is not a string");
  const std::string& kid = kid_it->get_ref<const std::string&>();
  const JwksKey* match = nullptr;
  for (const auto& candidate : jwks) {
    if (candidate.kid == kid) match = &candidate;
  }
  if (match == nullptr) {
    return Fail("token_unknown_key", fmt::format("no JWKS key has kid \"{}\"", Printable(kid)));
  }
  if (match->type != wanted) {
    return Fail("token_algorithm",
                fmt::format("kid \"{}\" is an {} key; it cannot verify {}", Printable(kid),
                            KeyTypeName(match->type), AlgName(alg)));
  }
  key = match->key.get();
  return std::nullopt;
}

Failure CheckSignature(Alg alg, const EVP_PKEY* public_key, const AuthConfig& config,
                       const TokenParts& parts) {
  const auto signature = DecodeBase64Url(parts.signature);
  if (!signature) return Fail("token_invalid", "malformed token: the signature is not base64url");
  // EVP_DigestVerifyInit takes a non-const key but only reads it (and bumps its reference
  // count atomically), so sharing one key between threads is safe.
  auto* key = const_cast<EVP_PKEY*>(public_key);
  bool verified = false;
  switch (alg) {
    case Alg::kHs256:
      verified = VerifyHs256(config.hs256_secret, parts.signing_input, *signature);
      break;
    case Alg::kRs256:
      verified = VerifyRs256(key, parts.signing_input, *signature);
      break;
    case Alg::kEs256:
      verified = VerifyEs256(key, parts.signing_input, *signature);
      break;
  }
  if (!verified) {
    return Fail("token_signature", fmt::format("the {} signature does not verify", AlgName(alg)));
  }
  return std::nullopt;
}

// exp is required (tokens must expire); nbf and iat, when present, must not be in the future.
// All with the configured leeway for clock skew.
Failure CheckTimes(const nlohmann::json& payload, std::chrono::system_clock::time_point now,
                   std::chrono::seconds leeway_seconds, double& expires_at) {
  const double now_seconds = std::chrono::duration<double>(now.time_since_epoch()).count();
  const auto leeway = static_cast<double>(leeway_seconds.count());
  std::optional<double> exp;
  std::optional<double> nbf;
  std::optional<double> iat;
  try {
    exp = NumericDate(payload, "exp");
    nbf = NumericDate(payload, "nbf");
    iat = NumericDate(payload, "iat");
  } catch (const std::invalid_argument& e) {
    return Fail("token_invalid", fmt::format("malformed token: {}", e.what()));
  }
  if (!exp) return Fail("token_invalid", "the token has no exp claim; tokens must expire");
  // A session ends at exp + leeway on a steady_clock timer, which counts nanoseconds in 64 bits
  // (up to the year 2262): a later exp cannot be scheduled, and would end the session at once.
  constexpr double kMaxExp = 9'000'000'000.0;  // 2255-03-14
  if (*exp > kMaxExp) {
    return Fail("token_invalid",
                fmt::format("the token's exp ({:.0f}) lies after 2255-03-14 (9000000000), later "
                            "than a session's end can be scheduled; issue tokens that expire "
                            "sooner",
                            *exp));
  }
  if (now_seconds >= *exp + leeway) {
    return Fail("token_expired", fmt::format("the token expired at {} (leeway {}s)",
                                             FormatTime(*exp), leeway_seconds.count()));
  }
  if (nbf && now_seconds + leeway < *nbf) {
    return Fail("token_not_yet_valid", fmt::format("the token is not valid before {} (leeway {}s)",
                                                   FormatTime(*nbf), leeway_seconds.count()));
  }
  if (iat && now_seconds + leeway < *iat) {
    return Fail("token_not_yet_valid", fmt::format("the token was issued in the future, at {} "
                                                   "(leeway {}s)",
                                                   FormatTime(*iat), leeway_seconds.count()));
  }
  expires_at = *exp;
  return std::nullopt;
}

Failure CheckIssuerAndAudience(const nlohmann::json& payload, const AuthConfig& config) {
  if (!config.issuer.empty()) {
    const auto iss = payload.find("iss");
    if (iss == payload.end() || !iss->is_string() ||
        iss->get_ref<const std::string&>() != config.issuer) {
      return Fail("token_issuer", fmt::format("the token's issuer is not {}", config.issuer));
    }
  }
  if (config.audience.empty() || config.audience == kAnyAudience) return std::nullopt;
  const auto is_ours = [&](const nlohmann::json& entry) {
    return entry.is_string() && entry.get_ref<const std::string&>() == config.audience;
  };
  const auto aud = payload.find("aud");
  const bool found =
      aud != payload.end() &&
      (is_ours(*aud) || (aud->is_array() && std::any_of(aud->begin(), aud->end(), is_ours)));
  if (!found) {
    return Fail("token_audience",
                fmt::format("the token's audience does not include {}", config.audience));
  }
  return std::nullopt;
}

// sub becomes the user id: the Kafka key and the partition. Bounded and printable.
Failure ReadSubject(const nlohmann::json& payload, std::string& subject) {
  const auto sub = payload.find("sub");
  if (sub == payload.end()) return Fail("token_no_subject", "the token has no sub claim");
  if (!sub->is_string()) return Fail("token_no_subject", "the token's sub is not a string");
  const std::string& text = sub->get_ref<const std::string&>();
  if (text.empty()) return Fail("token_no_subject", "the token's sub is empty");
  if (text.size() > kMaxSubjectBytes) {
    return Fail("token_no_subject",
                fmt::format("the token's sub is longer than {} bytes", kMaxSubjectBytes));
  }
  if (HasControlCharacter(text)) {
    return Fail("token_no_subject", "the token's sub contains control characters");
  }
  subject = text;
  return std::nullopt;
}

}  // namespace

AuthResult TokenVerifier::Verify(std::string_view token,
                                 std::chrono::system_clock::time_point now) const {
  const auto& config = keys_->config;
  TokenParts parts;
  if (auto failure = SplitToken(token, parts)) return *failure;
  const auto header = DecodeJsonObject(parts.header);
  if (!header) {
    return Fail("token_invalid", "malformed token: the header is not a base64url JSON object");
  }
  Alg alg{};
  if (auto failure = ReadAlgorithm(*header, alg)) return *failure;
  const EVP_PKEY* key = nullptr;
  if (auto failure = SelectKey(alg, *header, config, keys_->jwks, key)) return *failure;
  const auto payload = DecodeJsonObject(parts.payload);
  if (!payload) {
    return Fail("token_invalid", "malformed token: the payload is not a base64url JSON object");
  }
  if (auto failure = CheckSignature(alg, key, config, parts)) return *failure;

  AuthResult result;
  if (auto failure = CheckTimes(*payload, now, config.leeway, result.expires_at)) return *failure;
  if (auto failure = CheckIssuerAndAudience(*payload, config)) return *failure;
  if (auto failure = ReadSubject(*payload, result.user_id)) return *failure;
  result.ok = true;
  return result;
}

std::string MintHs256Token(std::string_view secret, std::string_view user, std::chrono::seconds ttl,
                           std::string_view issuer, std::string_view audience) {
  if (user.empty()) throw ConfigError("token: the user (--user) must not be empty");
  if (secret.size() < kMinSecretBytes) {
    throw ConfigError(fmt::format(
        "the HS256 secret (--secret / AGENTWIRE_JWT_SECRET) is {} bytes; at least {} are needed "
        "(e.g. openssl rand -hex 32)",
        secret.size(), kMinSecretBytes));
  }
  if (ttl < std::chrono::seconds(1)) {
    throw ConfigError("token: the ttl (--ttl) must be at least 1s");
  }

  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0 || raw == nullptr) throw std::bad_alloc();
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt(raw, &jwt_free);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const std::string user_text(user);
  const std::string issuer_text(issuer);
  const std::string audience_text(audience);
  int rc = jwt_add_grant(jwt.get(), "sub", user_text.c_str());
  if (rc == 0) rc = jwt_add_grant_int(jwt.get(), "iat", static_cast<long>(now));
  if (rc == 0) rc = jwt_add_grant_int(jwt.get(), "exp", static_cast<long>(now + ttl.count()));
  if (rc == 0 && !issuer.empty()) rc = jwt_add_grant(jwt.get(), "iss", issuer_text.c_str());
  if (rc == 0 && !audience.empty()) rc = jwt_add_grant(jwt.get(), "aud", audience_text.c_str());
  if (rc == 0) {
    rc =
        jwt_set_alg(jwt.get(), JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()),
                    static_cast<int>(secret.size()));
  }
  if (rc != 0) {
    throw std::runtime_error(fmt::format("libjwt: cannot build the token (errno {})", rc));
  }
  char* encoded = jwt_encode_str(jwt.get());
  if (encoded == nullptr) throw std::runtime_error("libjwt: cannot encode the token");
  std::string token(encoded);
  std::free(encoded);
  return token;
}

namespace {

/// The comma-separated entries of a Sec-WebSocket-Protocol header, trimmed.
std::vector<std::string_view> SubprotocolEntries(std::string_view header) {
  std::vector<std::string_view> entries;
  while (!header.empty()) {
    const size_t comma = header.find(',');
    const std::string_view entry = Trim(header.substr(0, comma));
    if (!entry.empty()) entries.push_back(entry);
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return entries;
}

}  // namespace

std::string_view AcceptedSubprotocol(std::string_view protocol_header) {
  const auto entries = SubprotocolEntries(protocol_header);
  const bool offered =
      std::find(entries.begin(), entries.end(), kBearerSubprotocol) != entries.end();
  return offered ? kBearerSubprotocol : std::string_view();
}

std::string ExtractToken(std::string_view authorization_header, std::string_view request_target,
                         std::string_view protocol_header) {
  const std::string_view header = Trim(authorization_header);
  constexpr std::string_view kScheme = "bearer";
  if (header.size() > kScheme.size() && LowerCopy(header.substr(0, kScheme.size())) == kScheme &&
      (header[kScheme.size()] == ' ' || header[kScheme.size()] == '\t')) {
    const std::string_view token = Trim(header.substr(kScheme.size()));
    if (!token.empty()) return std::string(token);
  }

  const auto entries = SubprotocolEntries(protocol_header);
  const auto marker = std::find(entries.begin(), entries.end(), kBearerSubprotocol);
  if (marker != entries.end() && marker + 1 != entries.end()) return std::string(*(marker + 1));

  const size_t question = request_target.find('?');
  if (question == std::string_view::npos) return {};
  std::string_view query = request_target.substr(question + 1);
  query = query.substr(0, query.find('#'));
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t equals = piece.find('=');
    if (equals == std::string_view::npos) continue;
    if (PercentDecode(piece.substr(0, equals), UrlPart::kQuery) == "access_token") {
      return PercentDecode(piece.substr(equals + 1), UrlPart::kQuery);
    }
  }
  return {};
}

std::string RedactTarget(std::string_view request_target) {
  // Parameters live after '?' (and, in matrix style, after ';' in the path).
  const size_t params_start = request_target.find_first_of("?;");
  std::string out(request_target.substr(0, params_start));
  if (params_start != std::string_view::npos) {
    out.push_back(request_target[params_start]);
    AppendRedactedParams(request_target.substr(params_start + 1), out);
  }
  // Whatever the parameter is called, or wherever a JWT was pasted, it does not survive.
  return ScrubJwtShapes(out);
}

}  // namespace agentwire::gateway
