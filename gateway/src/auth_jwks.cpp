#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/errors.hpp"
#include "auth_keys.hpp"

namespace agentwire::gateway::auth_detail {
namespace {

constexpr int kMinRsaBits = 2048;
constexpr size_t kP256CoordinateBytes = 32;

struct BnDeleter {
  void operator()(BIGNUM* bn) const noexcept { BN_free(bn); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* bld) const noexcept { OSSL_PARAM_BLD_free(bld); }
};
struct ParamsDeleter {
  void operator()(OSSL_PARAM* params) const noexcept { OSSL_PARAM_free(params); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* ctx) const noexcept { EVP_PKEY_CTX_free(ctx); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;

// The reason a key cannot be loaded; turned into a ConfigError naming the key.
struct KeyProblem {
  std::string reason;
};

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "OpenSSL gave no reason";
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  return text.data();
}

std::string MemberBytes(const nlohmann::json& jwk, const char* name) {
  const auto it = jwk.find(name);
  if (it == jwk.end()) throw KeyProblem{fmt::format("missing \"{}\"", name)};
  if (!it->is_string()) throw KeyProblem{fmt::format("\"{}\" is not a string", name)};
  auto bytes = DecodeBase64Url(it->get_ref<const std::string&>(), /*allow_padding=*/true);
  if (!bytes || bytes->empty()) throw KeyProblem{fmt::format("\"{}\" is not base64url", name)};
  return std::move(*bytes);
}

PkeyPtr FromData(const char* type_name, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamsDeleter> params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type_name, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    throw KeyProblem{"OpenSSL cannot build the key: " + OpenSslError()};
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 || !raw) {
    throw KeyProblem{"not a valid public key: " + OpenSslError()};
  }
  PkeyPtr key(raw);
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    throw KeyProblem{"not a valid public key: " + OpenSslError()};
  }
  return key;
}

PkeyPtr RsaFromJwk(const nlohmann::json& jwk) {
  const std::string n = MemberBytes(jwk, "n");
  const std::string e = MemberBytes(jwk, "e");
  BnPtr modulus(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()),
                          static_cast<int>(n.size()), nullptr));
  BnPtr exponent(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()),
                           static_cast<int>(e.size()), nullptr));
  if (!modulus || !exponent) throw KeyProblem{"out of memory"};
  if (BN_num_bits(modulus.get()) < kMinRsaBits) {
    throw KeyProblem{fmt::format("RSA modulus has {} bits; at least {} are required",
                                 BN_num_bits(modulus.get()), kMinRsaBits)};
  }
  if (!BN_is_odd(exponent.get()) || BN_is_one(exponent.get())) {
    throw KeyProblem{"RSA exponent \"e\" must be odd and greater than 1"};
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, modulus.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, exponent.get()) != 1) {
    throw KeyProblem{"OpenSSL cannot build the key: " + OpenSslError()};
  }
  return FromData("RSA", bld.get());
}

PkeyPtr EcP256FromJwk(const nlohmann::json& jwk) {
  const std::string x = MemberBytes(jwk, "x");
  const std::string y = MemberBytes(jwk, "y");
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    throw KeyProblem{fmt::format("P-256 \"x\" and \"y\" must be {} bytes each (got {} and {})",
                                 kP256CoordinateBytes, x.size(), y.size())};
  }
  // SEC 1 uncompressed point: 0x04 || x || y.
  std::string point(1, '\x04');
  point += x;
  point += y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    throw KeyProblem{"OpenSSL cannot build the key: " + OpenSslError()};
  }
  return FromData("EC", bld.get());
}

std::string OptionalString(const nlohmann::json& jwk, const char* name) {
  const auto it = jwk.find(name);
  if (it == jwk.end()) return {};
  if (!it->is_string()) throw KeyProblem{fmt::format("\"{}\" is not a string", name)};
  return it->get<std::string>();
}

std::string KeyLabel(size_t index, const nlohmann::json& jwk) {
  if (jwk.is_object()) {
    const auto kid = jwk.find("kid");
    if (kid != jwk.end() && kid->is_string()) {
      return fmt::format("key #{} (kid \"{}\")", index,
                         Printable(kid->get_ref<const std::string&>()));
    }
  }
  return fmt::format("key #{}", index);
}

}  // namespace

// The cursor codec's base64url (strict: canonical trailing bits, no padding); JWKS values may
// carry '=' padding, JWT segments may not.
std::optional<std::string> DecodeBase64Url(std::string_view text, bool allow_padding) {
  if (allow_padding) {
    while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  }
  return Base64UrlDecode(text);
}

std::string Printable(std::string_view text, size_t limit) {
  std::string out;
  for (const char c : text) {
    if (out.size() >= limit) {
      out += "...";
      break;
    }
    out.push_back(c >= 0x20 && c < 0x7F ? c : '?');
  }
  return out;
}

JwksLoad ParseJwks(std::string_view text, std::string_view source) {
  const auto fail = [&](const std::string& why) {
    return ConfigError(fmt::format("AGENTWIRE_JWKS_FILE {}: {}", source, why));
  };
  const auto document = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) throw fail("not valid JSON");
  if (!document.is_object() || !document.contains("keys") || !document["keys"].is_array()) {
    throw fail("expected a JWKS object {\"keys\": [...]}");
  }

  JwksLoad load;
  std::set<std::string> kids;
  const auto& keys = document["keys"];
  for (size_t index = 0; index < keys.size(); ++index) {
    const auto& jwk = keys[index];
    const std::string label = KeyLabel(index, jwk);
    try {
      if (!jwk.is_object()) throw KeyProblem{"not a JSON object"};
      const std::string kty = OptionalString(jwk, "kty");
      const std::string kid = OptionalString(jwk, "kid");
      const std::string alg = OptionalString(jwk, "alg");
      const std::string use = OptionalString(jwk, "use");
      if (kty.empty()) throw KeyProblem{"missing \"kty\""};
      if (kty == "oct") {
        throw KeyProblem{
            "symmetric (kty \"oct\") keys do not belong in the JWKS file; set "
            "AGENTWIRE_JWT_SECRET for HS256"};
      }
      for (const char* member : {"d", "p", "q", "dp", "dq", "qi", "k"}) {
        if (jwk.contains(member)) {
          throw KeyProblem{fmt::format(
              "contains private key material (\"{}\"); the gateway needs only the public key",
              member)};
        }
      }
      if (!use.empty() && use != "sig") {
        load.skipped.push_back(fmt::format("{}: \"use\": \"{}\"", label, Printable(use)));
        continue;
      }

      JwksKey key;
      key.kid = kid;
      if (kty == "RSA") {
        if (!alg.empty() && alg != "RS256") {
          if (alg.starts_with("ES")) {
            throw KeyProblem{fmt::format("RSA key with alg {}", Printable(alg))};
          }
          load.skipped.push_back(fmt::format("{}: alg {} is not supported", label, Printable(alg)));
          continue;
        }
        key.type = KeyType::kRsa;
        key.key = RsaFromJwk(jwk);
      } else if (kty == "EC") {
        const std::string crv = OptionalString(jwk, "crv");
        if (crv.empty()) throw KeyProblem{"EC key without \"crv\""};
        if (!alg.empty() &&
            (alg.starts_with("RS") || alg.starts_with("PS") || alg.starts_with("HS"))) {
          throw KeyProblem{fmt::format("EC key with alg {}", Printable(alg))};
        }
        if (crv != "P-256" || (!alg.empty() && alg != "ES256")) {
          load.skipped.push_back(
              fmt::format("{}: curve {} / alg {} is not supported (ES256 on P-256 is)", label,
                          Printable(crv), alg.empty() ? "-" : Printable(alg)));
          continue;
        }
        key.type = KeyType::kEcP256;
        key.key = EcP256FromJwk(jwk);
      } else {
        load.skipped.push_back(fmt::format("{}: kty {} is not supported", label, Printable(kty)));
        continue;
      }
      key.bits = EVP_PKEY_get_bits(key.key.get());
      if (!kid.empty() && !kids.insert(kid).second) throw KeyProblem{"duplicate kid"};
      load.keys.push_back(std::move(key));
    } catch (const KeyProblem& problem) {
      throw fail(fmt::format("{}: {}", label, problem.reason));
    }
  }
  if (load.keys.empty()) {
    throw fail(
        fmt::format("no usable RS256 or ES256 (P-256) signing key among {} keys", keys.size()));
  }
  return load;
}

JwksLoad LoadJwksFile(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw ConfigError(fmt::format("AGENTWIRE_JWKS_FILE {}: is a directory, not a JWKS file", path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError(
        fmt::format("AGENTWIRE_JWKS_FILE {}: cannot read ({})", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(fmt::format("AGENTWIRE_JWKS_FILE {}: read error", path));
  return ParseJwks(text.str(), path);
}

}  // namespace agentwire::gateway::auth_detail
