#pragma once

// One row of PostgreSQL's COPY text format, built field by field. Private to
// agentwire_consumers.
//
// Why not pqxx::stream_to's tuple operator: its escaper writes every byte outside printable
// ASCII as a four-character octal escape (every byte of UTF-8 text, and it runs per character
// through std::string appends): a third of the archive's CPU at 40,000 rows/s. COPY text needs
// only the backslash, the delimiter and line breaks escaped; everything else, UTF-8 included,
// goes through as it is.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <pqxx/tablewriter>
#include <string>
#include <string_view>
#include <vector>

namespace agentwire::consumers::internal {

class CopyRow final {
 public:
  /// Starts a new row (keeps the capacity).
  void Clear() {
    line_.clear();
    fields_ = 0;
  }

  /// A text value. It must not hold NUL (PostgreSQL text cannot store it; callers reject it).
  CopyRow& Text(std::string_view value) {
    Separate();
    const char* run = value.data();
    const char* const end = value.data() + value.size();
    for (const char* at = run; at != end; ++at) {
      const char escaped = EscapeOf(*at);
      if (escaped == 0) continue;
      line_.append(run, at);
      line_.push_back('\\');
      line_.push_back(escaped);
      run = at + 1;
    }
    line_.append(run, end);
    return *this;
  }
  CopyRow& TextOrNull(const std::optional<std::string>& value) {
    return value ? Text(std::string_view(*value)) : Null();
  }
  CopyRow& Int(int64_t value) {
    Separate();
    line_ += std::to_string(value);
    return *this;
  }
  /// A bytea value in hex form (\x0a1b...; the backslash itself escaped for COPY).
  CopyRow& Bytea(const void* data, size_t size) {
    static constexpr char kDigits[] = "0123456789abcdef";
    Separate();
    line_.append("\\\\x");
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
      line_.push_back(kDigits[bytes[i] >> 4]);
      line_.push_back(kDigits[bytes[i] & 0x0f]);
    }
    return *this;
  }
  CopyRow& Null() {
    Separate();
    line_.append("\\N");
    return *this;
  }

  /// The row without its line break (what stream_to::write_raw_line takes).
  const std::string& Line() const { return line_; }

 private:
  void Separate() {
    if (fields_++ > 0) line_.push_back('\t');
  }
  /// The letter after the backslash for a byte COPY would misread, 0 for any other byte.
  static char EscapeOf(char c) {
    switch (c) {
      case '\\':
        return '\\';
      case '\t':
        return 't';
      case '\n':
        return 'n';
      case '\r':
        return 'r';
      case '\b':
        return 'b';
      case '\f':
        return 'f';
      case '\v':
        return 'v';
      default:
        return 0;
    }
  }

  std::string line_;
  size_t fields_ = 0;
};

/// COPY <table> (<columns>) FROM STDIN fed with CopyRow lines. libpqxx 6.4 keeps stream_to's
/// raw-line writer private; tablewriter, which stream_to replaced (deprecated for its
/// escaping, which this bypasses), has it public.
class CopyWriter final {
 public:
  CopyWriter(pqxx::transaction_base& tx, const std::string& table,
             const std::vector<std::string>& columns) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    writer_ = std::make_unique<pqxx::tablewriter>(tx, table, columns.begin(), columns.end());
#pragma GCC diagnostic pop
  }
  void Write(const CopyRow& row) { writer_->write_raw_line(row.Line()); }
  void Write(const std::string& line) { writer_->write_raw_line(line); }
  /// Ends the COPY; PostgreSQL's verdict on the rows (e.g. a unique violation) throws here.
  void Complete() { writer_->complete(); }

 private:
  std::unique_ptr<pqxx::tablewriter> writer_;
};

}  // namespace agentwire::consumers::internal
