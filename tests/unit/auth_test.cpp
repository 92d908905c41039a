#include "agentwire/gateway/auth.hpp"

#include <gtest/gtest.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/cli/app.hpp"
#include "agentwire/core/errors.hpp"
#include "support/jwt_test_keys.hpp"

namespace agentwire::gateway {
namespace {

using nlohmann::json;
using std::chrono::seconds;

// Every test runs at this fixed instant: no dependence on the wall clock.
constexpr int64_t kNowSeconds = 1'900'000'000;
const auto kNow = std::chrono::system_clock::time_point(seconds(kNowSeconds));
const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

using testing::Base64Url;  // OpenSSL-based, independent of the verifier under test

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &size);
  return std::string(reinterpret_cast<char*>(mac), size);
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string PrivatePem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return BioText(bio.get());
}

std::string PublicPem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_PUBKEY(bio.get(), key);
  return BioText(bio.get());
}

std::string BnBytes(EVP_PKEY* key, const char* param, int pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(key, param, &bn), 1) << param;
  std::string out(pad > 0 ? static_cast<size_t>(pad) : static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

json RsaJwk(EVP_PKEY* key, const std::string& kid) {
  json jwk = {{"kty", "RSA"},
              {"n", Base64Url(BnBytes(key, OSSL_PKEY_PARAM_RSA_N))},
              {"e", Base64Url(BnBytes(key, OSSL_PKEY_PARAM_RSA_E))}};
  if (!kid.empty()) jwk["kid"] = kid;
  return jwk;
}

json EcJwk(EVP_PKEY* key, const std::string& kid) {
  json jwk = {{"kty", "EC"},
              {"crv", "P-256"},
              {"x", Base64Url(BnBytes(key, OSSL_PKEY_PARAM_EC_PUB_X, 32))},
              {"y", Base64Url(BnBytes(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32))}};
  if (!kid.empty()) jwk["kid"] = kid;
  return jwk;
}

/// Signs with libjwt (an implementation independent of the verifier's OpenSSL code).
std::string SignWithLibjwt(jwt_alg_t alg, std::string_view key, const json& claims,
                           const json& extra_headers = json::object()) {
  jwt_t* raw = nullptr;
  EXPECT_EQ(jwt_new(&raw), 0);
  std::unique_ptr<jwt_t, decltype(&jwt_free)> jwt(raw, &jwt_free);
  EXPECT_EQ(jwt_add_grants_json(jwt.get(), claims.dump().c_str()), 0);
  if (!extra_headers.empty()) {
    EXPECT_EQ(jwt_add_headers_json(jwt.get(), extra_headers.dump().c_str()), 0);
  }
  // libjwt wants no key at all for alg none.
  EXPECT_EQ(jwt_set_alg(jwt.get(), alg,
                        key.empty() ? nullptr : reinterpret_cast<const unsigned char*>(key.data()),
                        static_cast<int>(key.size())),
            0);
  char* encoded = jwt_encode_str(jwt.get());
  EXPECT_NE(encoded, nullptr);
  std::string token = encoded ? encoded : "";
  std::free(encoded);
  return token;
}

/// A token with any header, HMAC-signed with any key bytes (for attacks libjwt refuses to make).
std::string HandMadeHs256(const json& header, const json& claims, std::string_view key) {
  const std::string input = Base64Url(header.dump()) + "." + Base64Url(claims.dump());
  return input + "." + Base64Url(HmacSha256(key, input));
}

json Claims(const std::string& sub = "alice") {
  return {{"sub", sub}, {"iat", kNowSeconds - 10}, {"exp", kNowSeconds + 600}};
}

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "agentwire-auth-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) const {
    const auto file = path_ / name;
    std::ofstream(file) << text;
    return file.string();
  }

 private:
  std::filesystem::path path_;
};

// Keys are generated once per test binary run: RSA-2048 generation costs ~100 ms.
class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa1_.reset(EVP_RSA_gen(2048));
    rsa2_.reset(EVP_RSA_gen(2048));
    rsa_other_.reset(EVP_RSA_gen(2048));
    ec1_.reset(EVP_EC_gen("P-256"));
    ec_other_.reset(EVP_EC_gen("P-256"));
    ASSERT_TRUE(rsa1_ && rsa2_ && rsa_other_ && ec1_ && ec_other_);
  }

  void SetUp() override {
    jwks_ = {
        {"keys",
         {RsaJwk(rsa1_.get(), "rsa-1"), RsaJwk(rsa2_.get(), "rsa-2"), EcJwk(ec1_.get(), "ec-1")}}};
    jwks_path_ = dir_.Write("jwks.json", jwks_.dump());
  }

  AuthConfig SecretConfig() const {
    AuthConfig config;
    config.hs256_secret = kSecret;
    return config;
  }
  AuthConfig JwksConfig() const {
    AuthConfig config;
    config.jwks_file = jwks_path_;
    return config;
  }

  // Checks the failure code and that the message never echoes the token.
  static void ExpectFailure(const TokenVerifier& verifier, const std::string& token,
                            const std::string& code) {
    const auto result = verifier.Verify(token, kNow);
    EXPECT_FALSE(result.ok) << code;
    EXPECT_EQ(result.error_code, code) << result.message;
    EXPECT_FALSE(result.message.empty());
    EXPECT_TRUE(result.user_id.empty());
    if (token.size() >= 8) {
      EXPECT_EQ(result.message.find(token), std::string::npos) << result.message;
      const auto last_dot = token.rfind('.');
      if (last_dot != std::string::npos && token.size() - last_dot > 8) {
        EXPECT_EQ(result.message.find(token.substr(last_dot + 1)), std::string::npos);
      }
    }
  }

  static void ExpectUser(const TokenVerifier& verifier, const std::string& token,
                         const std::string& user) {
    const auto result = verifier.Verify(token, kNow);
    EXPECT_TRUE(result.ok) << result.error_code << ": " << result.message;
    EXPECT_EQ(result.user_id, user);
    EXPECT_TRUE(result.error_code.empty());
  }

  static inline Pkey rsa1_, rsa2_, rsa_other_, ec1_, ec_other_;
  TempDir dir_;
  json jwks_;
  std::string jwks_path_;
};

TEST_F(AuthTest, ValidHs256) {
  const TokenVerifier verifier(SecretConfig());
  ExpectUser(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims("alice")), "alice");
  // Fractional NumericDates are legal (RFC 7519 2).
  json claims = Claims("bob");
  claims["exp"] = kNowSeconds + 0.5 + 100;
  ExpectUser(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, claims), "bob");
}

TEST_F(AuthTest, ValidRs256SelectedByKid) {
  const TokenVerifier verifier(JwksConfig());
  ExpectUser(
      verifier,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims("u1"), {{"kid", "rsa-1"}}),
      "u1");
  ExpectUser(
      verifier,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa2_.get()), Claims("u2"), {{"kid", "rsa-2"}}),
      "u2");
  // Signed by rsa-1 but naming rsa-2: the kid picks the key, so this must fail.
  ExpectFailure(
      verifier,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims(), {{"kid", "rsa-2"}}),
      "token_signature");
}

TEST_F(AuthTest, ValidEs256WithAndWithoutKid) {
  const TokenVerifier verifier(JwksConfig());
  ExpectUser(
      verifier,
      SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims("carol"), {{"kid", "ec-1"}}),
      "carol");
  // No kid and exactly one key of that type: that key is used.
  ExpectUser(verifier, SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims("dave")),
             "dave");
}

TEST_F(AuthTest, KidSelection) {
  const TokenVerifier verifier(JwksConfig());
  // Two RSA keys and no kid: ambiguous.
  ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims()),
                "token_unknown_key");
  ExpectFailure(verifier,
                SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims(), {{"kid", "nope"}}),
                "token_unknown_key");
  // A kid naming a key of another type never lends that key to this algorithm.
  ExpectFailure(verifier,
                SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims(), {{"kid", "rsa-1"}}),
                "token_algorithm");
  ExpectFailure(verifier,
                SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims(), {{"kid", "ec-1"}}),
                "token_algorithm");

  // A single kid-less RSA key is used for a kid-less token.
  jwks_ = {{"keys", {RsaJwk(rsa1_.get(), "")}}};
  AuthConfig config;
  config.jwks_file = dir_.Write("single.json", jwks_.dump());
  const TokenVerifier single(config);
  ExpectUser(single, SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims("erin")),
             "erin");
  ExpectFailure(single, SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims()),
                "token_algorithm");
}

TEST_F(AuthTest, AlgorithmAllowlist) {
  const TokenVerifier secret_only(SecretConfig());
  const TokenVerifier jwks_only(JwksConfig());
  // RS256/ES256 only with JWKS keys.
  ExpectFailure(
      secret_only,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims(), {{"kid", "rsa-1"}}),
      "token_algorithm");
  ExpectFailure(secret_only, SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims()),
                "token_algorithm");
  // HS256 only with a secret.
  ExpectFailure(jwks_only, SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims()), "token_algorithm");
  // Everything else, whatever the key.
  ExpectFailure(secret_only, SignWithLibjwt(JWT_ALG_HS512, kSecret, Claims()), "token_algorithm");
  ExpectFailure(secret_only, SignWithLibjwt(JWT_ALG_HS384, kSecret, Claims()), "token_algorithm");
  ExpectFailure(
      jwks_only,
      SignWithLibjwt(JWT_ALG_RS512, PrivatePem(rsa1_.get()), Claims(), {{"kid", "rsa-1"}}),
      "token_algorithm");
  // Algorithm names are case-sensitive (RFC 7515 4.1.1).
  ExpectFailure(secret_only, HandMadeHs256({{"alg", "hs256"}}, Claims(), kSecret),
                "token_algorithm");
  ExpectFailure(secret_only, HandMadeHs256({{"typ", "JWT"}}, Claims(), kSecret), "token_invalid");
  ExpectFailure(secret_only, HandMadeHs256({{"alg", 256}}, Claims(), kSecret), "token_invalid");
}

TEST_F(AuthTest, AlgNoneRejected) {
  AuthConfig config = JwksConfig();
  config.hs256_secret = kSecret;
  const TokenVerifier verifier(config);
  // libjwt's own unsigned token: "alg":"none" and an empty signature.
  ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_NONE, "", Claims()), "token_algorithm");
  for (const char* none : {"none", "None", "NONE", "nOnE"}) {
    const std::string unsigned_token =
        Base64Url(json{{"alg", none}, {"typ", "JWT"}}.dump()) + "." + Base64Url(Claims().dump());
    ExpectFailure(verifier, unsigned_token + ".", "token_algorithm");
    // ... and with a signature made with the real secret attached: still no.
    ExpectFailure(verifier, unsigned_token + "." + Base64Url(HmacSha256(kSecret, unsigned_token)),
                  "token_algorithm");
  }
}

TEST_F(AuthTest, AlgorithmConfusionWithPublicKeyAsHmacSecretRejected) {
  const TokenVerifier jwks_only(JwksConfig());
  // The classic attack: header says HS256, HMAC key = the server's public key in some encoding.
  const std::vector<std::string> public_key_encodings = {
      PublicPem(rsa1_.get()), RsaJwk(rsa1_.get(), "rsa-1").dump(), jwks_.dump(),
      PublicPem(ec1_.get()), EcJwk(ec1_.get(), "ec-1").dump()};
  for (const auto& key : public_key_encodings) {
    ExpectFailure(jwks_only, SignWithLibjwt(JWT_ALG_HS256, key, Claims(), {{"kid", "rsa-1"}}),
                  "token_algorithm");
    ExpectFailure(jwks_only, SignWithLibjwt(JWT_ALG_HS256, key, Claims()), "token_algorithm");
    ExpectFailure(jwks_only, HandMadeHs256({{"alg", "HS256"}, {"kid", "ec-1"}}, Claims(), key),
                  "token_algorithm");
  }
  // With a secret configured too, HS256 uses only the secret: the public key signs nothing.
  AuthConfig both = JwksConfig();
  both.hs256_secret = kSecret;
  const TokenVerifier verifier(both);
  for (const auto& key : public_key_encodings) {
    ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_HS256, key, Claims(), {{"kid", "rsa-1"}}),
                  "token_signature");
  }
  // Keys embedded in the token header are never trusted.
  const std::string attacker_key(40, 'k');
  ExpectFailure(
      verifier,
      HandMadeHs256({{"alg", "HS256"}, {"jwk", {{"kty", "oct"}, {"k", Base64Url(attacker_key)}}}},
                    Claims(), attacker_key),
      "token_signature");
}

TEST_F(AuthTest, WrongSignatureRejected) {
  AuthConfig config = JwksConfig();
  config.hs256_secret = kSecret;
  const TokenVerifier verifier(config);
  ExpectFailure(verifier,
                SignWithLibjwt(JWT_ALG_HS256, "another-secret-another-secret-12345", Claims()),
                "token_signature");
  ExpectFailure(
      verifier,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa_other_.get()), Claims(), {{"kid", "rsa-1"}}),
      "token_signature");
  ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec_other_.get()), Claims()),
                "token_signature");

  // Valid tokens with one claim changed after signing: the user cannot be swapped.
  for (const auto& token :
       {SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims("alice")),
        SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims("alice"), {{"kid", "rsa-1"}}),
        SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims("alice"))}) {
    ExpectUser(verifier, token, "alice");
    const auto first = token.find('.');
    const auto second = token.find('.', first + 1);
    const std::string forged =
        token.substr(0, first + 1) + Base64Url(Claims("mallory").dump()) + token.substr(second);
    ExpectFailure(verifier, forged, "token_signature");
    // Truncated (to a length that is still valid base64url) and replaced signatures.
    ExpectFailure(verifier, token.substr(0, second + 1 + 20), "token_signature");
    ExpectFailure(verifier, token.substr(0, second + 1) + Base64Url(std::string(64, '\0')),
                  "token_signature");
  }
}

TEST_F(AuthTest, TimeClaimsWithLeeway) {
  const TokenVerifier verifier(SecretConfig());  // default leeway 30 s
  auto token_with = [](const json& changes) {
    json claims = Claims();
    claims.update(changes);
    return SignWithLibjwt(JWT_ALG_HS256, kSecret, claims);
  };
  ExpectFailure(verifier, token_with({{"exp", kNowSeconds - 31}}), "token_expired");
  ExpectFailure(verifier, token_with({{"exp", kNowSeconds - 3600}}), "token_expired");
  ExpectUser(verifier, token_with({{"exp", kNowSeconds - 10}}), "alice");  // within leeway
  ExpectFailure(verifier, token_with({{"nbf", kNowSeconds + 60}}), "token_not_yet_valid");
  ExpectUser(verifier, token_with({{"nbf", kNowSeconds + 10}}), "alice");
  ExpectFailure(verifier, token_with({{"iat", kNowSeconds + 120}}), "token_not_yet_valid");
  ExpectUser(verifier, token_with({{"iat", kNowSeconds + 20}}), "alice");

  // An exp past what a session's steady_clock deadline can hold (nanoseconds in 64 bits, the
  // year 2262) is refused, not accepted to overflow the deadline; a far but representable one
  // is fine.
  ExpectFailure(verifier, token_with({{"exp", 10'000'000'000LL}}), "token_invalid");
  ExpectFailure(verifier, token_with({{"exp", 1e300}}), "token_invalid");
  ExpectUser(verifier, token_with({{"exp", 8'000'000'000LL}}), "alice");

  // exp is required and every time claim must be a number.
  json no_exp = Claims();
  no_exp.erase("exp");
  ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, no_exp), "token_invalid");
  ExpectFailure(verifier, token_with({{"exp", "tomorrow"}}), "token_invalid");
  ExpectFailure(verifier, token_with({{"nbf", true}}), "token_invalid");

  AuthConfig strict = SecretConfig();
  strict.leeway = seconds(0);
  const TokenVerifier no_leeway(strict);
  ExpectFailure(no_leeway, token_with({{"exp", kNowSeconds}}), "token_expired");
  ExpectUser(no_leeway, token_with({{"exp", kNowSeconds + 1}}), "alice");
}

TEST_F(AuthTest, SubjectRequired) {
  const TokenVerifier verifier(SecretConfig());
  json claims = Claims();
  claims.erase("sub");
  ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, claims), "token_no_subject");
  for (const json& bad : {json(42), json(nullptr), json::array({"alice"}), json(""),
                          json(std::string(300, 'a')), json("ali\nce"), json({{"id", "alice"}})}) {
    claims["sub"] = bad;
    ExpectFailure(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, claims), "token_no_subject");
  }
  ExpectUser(verifier,
             SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims("auth0|5f7c8ec7c33c6c004bbafe82")),
             "auth0|5f7c8ec7c33c6c004bbafe82");
  ExpectUser(verifier, SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims("zoë@example.com")),
             "zoë@example.com");
}

TEST_F(AuthTest, IssuerAndAudience) {
  AuthConfig config = SecretConfig();
  config.issuer = "https://idp.example";
  config.audience = "agentwire";
  const TokenVerifier verifier(config);
  auto token_with = [](json changes, const std::vector<std::string>& erase = {}) {
    if (changes.is_null()) changes = json::object();
    json claims = Claims();
    claims["iss"] = "https://idp.example";
    claims["aud"] = "agentwire";
    claims.update(changes);
    for (const auto& name : erase) claims.erase(name);
    return SignWithLibjwt(JWT_ALG_HS256, kSecret, claims);
  };
  ExpectUser(verifier, token_with({}), "alice");
  ExpectUser(verifier, token_with({{"aud", {"other", "agentwire"}}}), "alice");
  ExpectFailure(verifier, token_with({{"iss", "https://evil.example"}}), "token_issuer");
  ExpectFailure(verifier, token_with({{"iss", "https://idp.example/"}}), "token_issuer");
  ExpectFailure(verifier, token_with({}, {"iss"}), "token_issuer");
  ExpectFailure(verifier, token_with({{"aud", "other"}}), "token_audience");
  ExpectFailure(verifier, token_with({{"aud", {"other", "another"}}}), "token_audience");
  ExpectFailure(verifier, token_with({{"aud", json::array()}}), "token_audience");
  ExpectFailure(verifier, token_with({}, {"aud"}), "token_audience");
  ExpectFailure(verifier, token_with({{"aud", {{"agentwire", true}}}}), "token_audience");

  // Without iss/aud configured, any (or none) is accepted.
  const TokenVerifier lenient(SecretConfig());
  ExpectUser(lenient, token_with({{"iss", "whoever"}, {"aud", "whatever"}}), "alice");
}

TEST_F(AuthTest, MalformedTokensGetClearErrors) {
  AuthConfig config = JwksConfig();
  config.hs256_secret = kSecret;
  const TokenVerifier verifier(config);
  const std::string good = SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims());
  const auto first = good.find('.');
  const auto second = good.find('.', first + 1);
  const std::string header = good.substr(0, first);
  const std::string payload = good.substr(first + 1, second - first - 1);
  const std::string signature = good.substr(second + 1);

  ExpectFailure(verifier, "", "token_missing");
  ExpectFailure(verifier, "not-a-jwt", "token_invalid");
  ExpectFailure(verifier, header + "." + payload, "token_invalid");
  ExpectFailure(verifier, good + ".extra", "token_invalid");
  ExpectFailure(verifier, "a.b.c.d.e", "token_invalid");
  ExpectFailure(verifier, "..", "token_invalid");
  ExpectFailure(verifier, "!!!." + payload + "." + signature, "token_invalid");
  ExpectFailure(verifier, Base64Url("not json") + "." + payload + "." + signature, "token_invalid");
  ExpectFailure(verifier, Base64Url("[\"HS256\"]") + "." + payload + "." + signature,
                "token_invalid");
  ExpectFailure(verifier, header + "." + Base64Url("{\"sub\":") + "." + signature, "token_invalid");
  ExpectFailure(verifier, header + ".@@@." + signature, "token_invalid");
  ExpectFailure(verifier, header + "." + payload + ".a+b/", "token_invalid");
  // Padding and standard-base64 characters are not base64url.
  ExpectFailure(verifier, header + "=." + payload + "." + signature, "token_invalid");
  ExpectFailure(verifier, std::string(20000, 'a') + "." + payload + "." + signature,
                "token_invalid");
  // crit extensions we do not understand must be rejected (RFC 7515 4.1.11).
  ExpectFailure(verifier,
                HandMadeHs256({{"alg", "HS256"}, {"crit", {"exp"}}, {"exp", 1}}, Claims(), kSecret),
                "token_invalid");
  // Garbage bytes of every kind never crash and never pass.
  std::string noise(600, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(noise.data()), static_cast<int>(noise.size()));
  for (size_t cut = 0; cut < noise.size(); cut += 37) {
    const auto result = verifier.Verify(noise.substr(0, cut), kNow);
    EXPECT_FALSE(result.ok);
    EXPECT_FALSE(result.error_code.empty());
  }
}

TEST_F(AuthTest, JwksConfigErrorsNameTheProblem) {
  auto error_for = [&](const json& jwks) -> std::string {
    AuthConfig config;
    config.jwks_file = dir_.Write("bad.json", jwks.dump());
    try {
      TokenVerifier verifier(config);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  auto expect_error = [&](const json& jwks, const std::vector<std::string>& fragments) {
    const std::string message = error_for(jwks);
    EXPECT_NE(message.find("AGENTWIRE_JWKS_FILE"), std::string::npos) << message;
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "'" << fragment << "' not in: " << message;
    }
  };
  json rsa = RsaJwk(rsa1_.get(), "k1");
  json ec = EcJwk(ec1_.get(), "k2");

  json no_n = rsa;
  no_n.erase("n");
  expect_error({{"keys", {no_n}}}, {"k1", "\"n\""});
  json bad_x = ec;
  bad_x["x"] = Base64Url(std::string(31, 'x'));
  expect_error({{"keys", {bad_x}}}, {"k2", "32 bytes"});
  json off_curve = ec;
  off_curve["y"] = Base64Url(std::string(32, '\x01'));
  expect_error({{"keys", {off_curve}}}, {"k2", "not a valid public key"});
  json private_key = rsa;
  private_key["d"] = "AQAB";
  expect_error({{"keys", {private_key}}}, {"k1", "private"});
  expect_error({{"keys", {{{"kty", "oct"}, {"kid", "s"}, {"k", "c2VjcmV0"}}}}},
               {"\"s\"", "AGENTWIRE_JWT_SECRET"});
  expect_error({{"keys", {rsa, rsa}}}, {"duplicate kid"});
  expect_error({{"keys", {{{"kid", "x"}}}}}, {"kty"});
  expect_error({{"keys", json::array()}}, {"no usable"});
  expect_error({{"keys", {json{{"kty", "EC"}, {"crv", "P-384"}, {"x", "AA"}, {"y", "AA"}}}}},
               {"no usable"});
  expect_error({{"not_keys", 1}}, {"{\"keys\""});
  json rs_alg_on_ec = ec;
  rs_alg_on_ec["alg"] = "RS256";
  expect_error({{"keys", {rs_alg_on_ec}}}, {"k2", "RS256"});

  Pkey small(EVP_RSA_gen(1024));
  expect_error({{"keys", {RsaJwk(small.get(), "tiny")}}}, {"tiny", "1024 bits"});

  AuthConfig missing;
  missing.jwks_file = "/nonexistent/agentwire/jwks.json";
  try {
    TokenVerifier verifier(missing);
    ADD_FAILURE() << "missing file accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/agentwire/jwks.json"), std::string::npos);
  }
  AuthConfig not_json;
  not_json.jwks_file = dir_.Write("garbage.json", "{ this is not json");
  EXPECT_THROW(TokenVerifier verifier(not_json), ConfigError);

  // Keys for other purposes or algorithms are skipped, not fatal, when a usable key remains.
  json enc = rsa;
  enc["use"] = "enc";
  enc["kid"] = "enc-1";
  json rs512 = RsaJwk(rsa2_.get(), "rs512");
  rs512["alg"] = "RS512";
  json okp = {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "AA"}, {"kid", "ed"}};
  AuthConfig mixed;
  mixed.jwks_file = dir_.Write("mixed.json", json{{"keys", {enc, rs512, okp, ec}}}.dump());
  const TokenVerifier verifier(mixed);
  EXPECT_NE(verifier.Describe().find("3 skipped"), std::string::npos) << verifier.Describe();
  ExpectUser(verifier,
             SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims("f"), {{"kid", "k2"}}),
             "f");
  // Skipped keys are never selectable.
  ExpectFailure(verifier,
                SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims(), {{"kid", "enc-1"}}),
                "token_unknown_key");
  ExpectFailure(
      verifier,
      SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), Claims(), {{"kid", "enc-1"}}),
      "token_algorithm");
}

TEST_F(AuthTest, SecretConfigErrors) {
  EXPECT_THROW(TokenVerifier verifier(AuthConfig{}), ConfigError);
  AuthConfig short_secret;
  short_secret.hs256_secret = std::string(31, 's');
  try {
    TokenVerifier verifier(short_secret);
    ADD_FAILURE() << "31-byte secret accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("AGENTWIRE_JWT_SECRET"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find(short_secret.hs256_secret), std::string::npos);
  }
  AuthConfig negative = SecretConfig();
  negative.leeway = seconds(-1);
  EXPECT_THROW(TokenVerifier verifier(negative), ConfigError);
  const TokenVerifier verifier(SecretConfig());
  EXPECT_EQ(verifier.Describe().find(kSecret), std::string::npos);
}

TEST_F(AuthTest, VerifyIsThreadSafe) {
  AuthConfig config = JwksConfig();
  config.hs256_secret = kSecret;
  const TokenVerifier verifier(config);
  const std::vector<std::pair<std::string, bool>> tokens = {
      {SignWithLibjwt(JWT_ALG_HS256, kSecret, Claims("t")), true},
      {SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa2_.get()), Claims("t"), {{"kid", "rsa-2"}}),
       true},
      {SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec1_.get()), Claims("t")), true},
      {SignWithLibjwt(JWT_ALG_ES256, PrivatePem(ec_other_.get()), Claims("t")), false}};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const TokenVerifier copy = verifier;  // copies share the keys
      for (int i = 0; i < 100; ++i) {
        const auto& [token, valid] = tokens[static_cast<size_t>(i + t) % tokens.size()];
        const auto result = (i % 2 ? copy : verifier).Verify(token, kNow);
        if (result.ok != valid || (valid && result.user_id != "t")) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(AuthTest, MintedTokensVerify) {
  AuthConfig config = SecretConfig();
  config.issuer = "agentwire-dev";
  config.audience = "agentwire";
  const TokenVerifier verifier(config);
  const std::string token =
      MintHs256Token(kSecret, "alice", seconds(3600), "agentwire-dev", "agentwire");
  const auto result = verifier.Verify(token);
  EXPECT_TRUE(result.ok) << result.message;
  EXPECT_EQ(result.user_id, "alice");
  // Expired an hour after minting (plus leeway).
  EXPECT_EQ(
      verifier.Verify(token, std::chrono::system_clock::now() + seconds(3600 + 31)).error_code,
      "token_expired");
  // Without iss/aud the strict verifier refuses it; a lenient one accepts.
  const std::string plain = MintHs256Token(kSecret, "bob", seconds(60));
  EXPECT_EQ(verifier.Verify(plain).error_code, "token_issuer");
  EXPECT_TRUE(TokenVerifier(SecretConfig()).Verify(plain).ok);

  EXPECT_THROW(MintHs256Token("short", "alice", seconds(60)), ConfigError);
  EXPECT_THROW(MintHs256Token(kSecret, "", seconds(60)), ConfigError);
  EXPECT_THROW(MintHs256Token(kSecret, "alice", seconds(0)), ConfigError);
}

TEST(ExtractToken, HeaderWinsOverQuery) {
  EXPECT_EQ(ExtractToken("Bearer abc.def.ghi", "/v1/events?access_token=other"), "abc.def.ghi");
  EXPECT_EQ(ExtractToken("bearer   abc.def.ghi  ", "/v1/events"), "abc.def.ghi");
  EXPECT_EQ(ExtractToken("BEARER\tabc", "/v1/events"), "abc");
  // Another scheme, or an empty Bearer, falls back to the query.
  EXPECT_EQ(ExtractToken("Basic dXNlcjpwYXNz", "/v1/events?access_token=q.r.s"), "q.r.s");
  EXPECT_EQ(ExtractToken("Bearer ", "/v1/events?access_token=q.r.s"), "q.r.s");
  EXPECT_EQ(ExtractToken("Bearerabc", "/v1/events"), "");
  EXPECT_EQ(ExtractToken("", "/v1/events"), "");
  EXPECT_EQ(ExtractToken("", "/v1/events?cursor=abc&run_id=r"), "");
}

TEST(ExtractToken, QueryParameterIsPercentDecoded) {
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=a.b.c"), "a.b.c");
  EXPECT_EQ(ExtractToken("", "/v1/events?cursor=x%3D&access_token=a%2Eb%2ec&run_id=r"), "a.b.c");
  EXPECT_EQ(ExtractToken("", "/v1/events?access%5Ftoken=a.b.c"), "a.b.c");
  EXPECT_EQ(ExtractToken("", "/v1/events?my_access_token=x&access_token=y"), "y");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=first&access_token=second"), "first");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=a.b.c#frag"), "a.b.c");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token="), "");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token"), "");
  // A broken escape is kept literally (the token then fails verification).
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=a%zzb%4"), "a%zzb%4");
}

TEST(ExtractToken, SubprotocolPairAfterTheHeaderBeforeTheQuery) {
  const std::string offer = "agentwire.bearer, a.b.c";
  EXPECT_EQ(ExtractToken("", "/v1/events", offer), "a.b.c");
  EXPECT_EQ(ExtractToken("", "/v1/events", "chat,agentwire.bearer ,a.b.c, other"), "a.b.c");
  EXPECT_EQ(ExtractToken("Bearer h.h.h", "/v1/events?access_token=q.q.q", offer), "h.h.h");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=q.q.q", offer), "a.b.c");
  // The marker without a token after it, or a token without the marker, is no token.
  EXPECT_EQ(ExtractToken("", "/v1/events", "agentwire.bearer"), "");
  EXPECT_EQ(ExtractToken("", "/v1/events", "a.b.c"), "");
  EXPECT_EQ(ExtractToken("", "/v1/events?access_token=q.q.q", "agentwire.bearer"), "q.q.q");
}

TEST(AcceptedSubprotocol, OnlyTheMarkerAndOnlyWhenOffered) {
  EXPECT_EQ(AcceptedSubprotocol("agentwire.bearer, a.b.c"), "agentwire.bearer");
  EXPECT_EQ(AcceptedSubprotocol("chat, agentwire.bearer,a.b.c"), "agentwire.bearer");
  EXPECT_EQ(AcceptedSubprotocol(""), "");
  EXPECT_EQ(AcceptedSubprotocol("chat, a.b.c"), "");
  EXPECT_EQ(AcceptedSubprotocol("agentwire.bearer.x"), "");
}

TEST(AuthConfigValidate, JwksNeedsAnAudienceOrAnExplicitAny) {
  AuthConfig config;
  config.jwks_file = "/keys/jwks.json";
  try {
    config.Validate();
    ADD_FAILURE() << "a JWKS without an audience was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--jwt-audience"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'any'"), std::string::npos) << e.what();
  }
  config.audience = "agentwire";
  EXPECT_NO_THROW(config.Validate());
  config.audience = "any";
  EXPECT_NO_THROW(config.Validate());
  // An HS256 secret is agentwire's own: no audience needed.
  AuthConfig secret;
  secret.hs256_secret = kSecret;
  EXPECT_NO_THROW(secret.Validate());
}

TEST_F(AuthTest, AudienceAnyAcceptsEveryAudience) {
  AuthConfig config = JwksConfig();
  config.audience = "any";
  const TokenVerifier verifier(config);
  auto claims = Claims("gina");
  claims["aud"] = "some-other-app";
  ExpectUser(verifier,
             SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), claims, {{"kid", "rsa-1"}}),
             "gina");
  config.audience = "agentwire";
  ExpectFailure(TokenVerifier(config),
                SignWithLibjwt(JWT_ALG_RS256, PrivatePem(rsa1_.get()), claims, {{"kid", "rsa-1"}}),
                "token_audience");
}

TEST(RedactTarget, NeverLeaksTheToken) {
  const std::string token = MintHs256Token(kSecret, "alice", seconds(60));
  const std::string encoded = [&] {
    std::string out;
    for (char c : token) out += c == '.' ? std::string("%2E") : std::string(1, c);
    return out;
  }();
  const std::string signature = token.substr(token.rfind('.') + 1);
  const std::vector<std::string> targets = {
      "/v1/events?access_token=" + token,
      "/v1/events?cursor=abc&access_token=" + token + "&thread_id=t1",
      "/v1/events?access_token=" + encoded,
      "/v1/events?ACCESS_TOKEN=" + token,
      "/v1/events?token=" + token,
      "/v1/events?id_token=" + token,
      "/v1/events?jwt=" + token,
      "/v1/events?whatever=" + token,
      "/v1/events?whatever=" + encoded,
      "/v1/events?" + token,
      "/v1/events;access_token=" + token,
      "/v1/events?run_id=r;access_token=" + token,
      "/v1/events?x=1#access_token=" + token,
      "/v1/events/" + token + "?cursor=c",
      "/v1/events?access%5Ftoken=" + token,
  };
  for (const auto& target : targets) {
    const std::string redacted = RedactTarget(target);
    EXPECT_EQ(redacted.find(signature), std::string::npos) << redacted;
    EXPECT_NE(redacted.find("REDACTED"), std::string::npos) << redacted;
  }
}

TEST(RedactTarget, KeepsEverythingElse) {
  EXPECT_EQ(RedactTarget("/v1/events"), "/v1/events");
  EXPECT_EQ(RedactTarget("/v1/events?cursor=AAAB_c-d&thread_id=t%201&run_id=r"),
            "/v1/events?cursor=AAAB_c-d&thread_id=t%201&run_id=r");
  EXPECT_EQ(RedactTarget("/v1/events?cursor=c&access_token=abc&run_id=r"),
            "/v1/events?cursor=c&access_token=REDACTED&run_id=r");
  EXPECT_EQ(RedactTarget("/v1/events?token=abc&api_key=k&password=p&client_secret=s"),
            "/v1/events?token=REDACTED&api_key=REDACTED&password=REDACTED&client_secret=REDACTED");
  EXPECT_EQ(RedactTarget("/?"), "/?");
  EXPECT_EQ(RedactTarget(""), "");
}

class TokenCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name :
         {"AGENTWIRE_JWT_SECRET", "AGENTWIRE_JWT_ISSUER", "AGENTWIRE_JWT_AUDIENCE"}) {
      if (const char* value = std::getenv(name)) saved_.emplace_back(name, value);
      unsetenv(name);
    }
  }
  void TearDown() override {
    unsetenv("AGENTWIRE_JWT_SECRET");
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

  // Runs `agentwire <args...>` in process; returns the exit code and captures stdout.
  int Run(std::vector<std::string> args, std::string& out) {
    args.insert(args.begin(), "agentwire");
    std::vector<char*> argv;
    argv.reserve(args.size());
    for (auto& arg : args) argv.push_back(arg.data());
    std::ostringstream captured;
    std::ostringstream errors;
    auto* old_out = std::cout.rdbuf(captured.rdbuf());
    auto* old_err = std::cerr.rdbuf(errors.rdbuf());
    const int code = cli::RunCli(static_cast<int>(argv.size()), argv.data());
    std::cout.rdbuf(old_out);
    std::cerr.rdbuf(old_err);
    out = captured.str();
    errors_ = errors.str();
    return code;
  }

  std::vector<std::pair<std::string, std::string>> saved_;
  std::string errors_;
};

TEST_F(TokenCommandTest, PrintsAVerifiableToken) {
  std::string out;
  ASSERT_EQ(Run({"token", "--user", "alice", "--secret", kSecret, "--ttl", "2h", "--issuer", "i",
                 "--audience", "a"},
                out),
            0)
      << errors_;
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  out.pop_back();
  AuthConfig config;
  config.hs256_secret = kSecret;
  config.issuer = "i";
  config.audience = "a";
  const auto result = TokenVerifier(config).Verify(out);
  EXPECT_TRUE(result.ok) << result.message;
  EXPECT_EQ(result.user_id, "alice");
  EXPECT_EQ(TokenVerifier(config)
                .Verify(out, std::chrono::system_clock::now() + seconds(7200 + 60))
                .error_code,
            "token_expired");

  // The secret from the environment works the same.
  setenv("AGENTWIRE_JWT_SECRET", kSecret.c_str(), 1);
  ASSERT_EQ(Run({"token", "--user", "bob"}, out), 0) << errors_;
  config.issuer.clear();
  config.audience.clear();
  EXPECT_EQ(TokenVerifier(config).Verify(out.substr(0, out.size() - 1)).user_id, "bob");
}

TEST_F(TokenCommandTest, MissingUserOrSecretIsAConfigError) {
  std::string out;
  EXPECT_EQ(Run({"token", "--user", "alice"}, out), kExitConfig);
  EXPECT_NE(errors_.find("AGENTWIRE_JWT_SECRET"), std::string::npos) << errors_;
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(Run({"token", "--secret", kSecret}, out), kExitConfig);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(Run({"token", "--user", "alice", "--secret", "s3cr3t-value"}, out), kExitConfig);
  EXPECT_EQ(errors_.find("s3cr3t-value"), std::string::npos)
      << "the secret was echoed: " << errors_;
  EXPECT_EQ(Run({"token", "--user", "alice", "--secret", kSecret, "--ttl", "soon"}, out),
            kExitConfig);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace agentwire::gateway
