// The archive's COPY rows (consumers/src/copy_row.hpp) against a real PostgreSQL: random text
// with every byte COPY treats specially (backslash, tab, line breaks, other controls), UTF-8,
// the literal text \N, empty strings, NULLs, bytea of every byte value and 64-bit integers
// come back from the table exactly as they went in.
#include "copy_row.hpp"

#include <gtest/gtest.h>

#include <random>

#include "support/postgres_fixture.hpp"

namespace agentwire::consumers::internal {
namespace {

std::string RandomText(std::mt19937& random) {
  static const std::vector<std::string> kPieces = {
      "a",     "Z",    " ",   "\\",    "\t", "\n",   "\r", "\b", "\f", "\v", "\x01",
      "\x1f",  "\x7f", "\\N", "\\\\N", "é",  "中文", "😀",  "\"", "'",  ",",  "{\"k\":\"v\\n\"}",
      "\\x41", ".",    "0",   "\\t"};
  std::uniform_int_distribution<size_t> count(0, 12);
  std::uniform_int_distribution<size_t> pick(0, kPieces.size() - 1);
  std::string text;
  for (size_t i = count(random); i > 0; --i) text += kPieces[pick(random)];
  return text;
}

TEST(CopyRow, EveryValueRoundTripsThroughPostgres) {
  auto& pg = testing::SharedPostgres();
  const std::string dsn = pg.CreateDatabase("copy_row");
  pqxx::connection connection(dsn);
  {
    pqxx::work tx(connection);
    tx.exec("CREATE TABLE t (id integer, s text, n bigint, b bytea, o text)");
    tx.commit();
  }
  struct Expected {
    std::string s;
    int64_t n = 0;
    std::string b;
    std::optional<std::string> o;
  };
  std::mt19937 random(20261204);
  std::uniform_int_distribution<int64_t> number(INT64_MIN, INT64_MAX);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> length(0, 64);
  std::vector<Expected> expected(2000);
  {
    pqxx::work tx(connection);
    CopyWriter copy(tx, "t", {"id", "s", "n", "b", "o"});
    CopyRow row;
    for (size_t i = 0; i < expected.size(); ++i) {
      auto& e = expected[i];
      e.s = RandomText(random);
      e.n = i == 0 ? INT64_MIN : number(random);
      for (size_t k = length(random); k > 0; --k) e.b.push_back(static_cast<char>(byte(random)));
      if (i % 3 != 0) e.o = RandomText(random);
      row.Clear();
      row.Int(static_cast<int64_t>(i)).Text(e.s).Int(e.n).Bytea(e.b.data(), e.b.size());
      row.TextOrNull(e.o);
      copy.Write(row);
    }
    copy.Complete();
    tx.commit();
  }
  pqxx::work tx(connection);
  const auto result = tx.exec("SELECT id, s, n, encode(b, 'hex'), o FROM t ORDER BY id");
  ASSERT_EQ(result.size(), expected.size());
  for (const auto& r : result) {
    const auto& e = expected.at(r[0].as<size_t>());
    EXPECT_EQ(r[1].as<std::string>(), e.s);
    EXPECT_EQ(r[2].as<int64_t>(), e.n);
    CopyRow hex;
    hex.Bytea(e.b.data(), e.b.size());  // "\\x" + hex, as COPY text
    EXPECT_EQ(r[3].as<std::string>(), hex.Line().substr(3));
    EXPECT_EQ(r[4].is_null(), !e.o.has_value());
    if (e.o) {
      EXPECT_EQ(r[4].as<std::string>(), *e.o);
    }
  }
}

}  // namespace
}  // namespace agentwire::consumers::internal
