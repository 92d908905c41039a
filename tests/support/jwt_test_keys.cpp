#include "support/jwt_test_keys.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <chrono>
#include <stdexcept>

namespace agentwire::testing {

namespace {

std::string BigNumBytes(EVP_PKEY* key, const char* param) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, param, &bn) != 1) throw std::runtime_error("RSA key parameter");
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

std::string SigningInput(const nlohmann::json& header, const nlohmann::json& claims) {
  return Base64Url(header.dump()) + "." + Base64Url(claims.dump());
}

}  // namespace

std::string Base64Url(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

struct RsaTestKey::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

RsaTestKey::RsaTestKey() : key_(std::make_unique<Key>()) {
  key_->pkey = EVP_RSA_gen(2048);
  if (key_->pkey == nullptr) throw std::runtime_error("EVP_RSA_gen failed");
}

RsaTestKey::~RsaTestKey() = default;

std::string RsaTestKey::PublicPem() const {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_PUBKEY(bio.get(), key_->pkey);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

nlohmann::json RsaTestKey::Jwk(const std::string& kid) const {
  nlohmann::json jwk = {{"kty", "RSA"},
                        {"n", Base64Url(BigNumBytes(key_->pkey, OSSL_PKEY_PARAM_RSA_N))},
                        {"e", Base64Url(BigNumBytes(key_->pkey, OSSL_PKEY_PARAM_RSA_E))}};
  if (!kid.empty()) jwk["kid"] = kid;
  return jwk;
}

std::string RsaTestKey::SignRs256(nlohmann::json header, const nlohmann::json& claims) const {
  header["alg"] = "RS256";
  const std::string input = SigningInput(header, claims);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  size_t size = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_->pkey) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
    throw std::runtime_error("RS256 signing failed");
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
    throw std::runtime_error("RS256 signing failed");
  }
  signature.resize(size);
  return input + "." + Base64Url(signature);
}

std::string HandMadeHs256(const nlohmann::json& header, const nlohmann::json& claims,
                          std::string_view key) {
  const std::string input = SigningInput(header, claims);
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t size = 0;
  // EVP_Q_mac rather than HMAC(): the latter is deprecated in OpenSSL 3.
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
                sizeof(mac), &size) == nullptr) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return input + "." + Base64Url(std::string_view(reinterpret_cast<char*>(mac), size));
}

std::string UnsignedToken(const nlohmann::json& header, const nlohmann::json& claims) {
  return SigningInput(header, claims) + ".";
}

nlohmann::json TestClaims(const std::string& user, long ttl_seconds, const std::string& issuer,
                          const std::string& audience) {
  const long now = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  nlohmann::json claims = {{"sub", user}, {"iat", now - 10}, {"exp", now + ttl_seconds}};
  if (!issuer.empty()) claims["iss"] = issuer;
  if (!audience.empty()) claims["aud"] = audience;
  return claims;
}

}  // namespace agentwire::testing
