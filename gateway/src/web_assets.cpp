#include "web_assets.hpp"

#include <fstream>
#include <sstream>

namespace agentwire::gateway {
namespace {

std::string ContentType(std::string_view name) {
  const auto dot = name.rfind('.');
  const auto ext = dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js" || ext == "mjs") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "json") return "application/json";
  if (ext == "png") return "image/png";
  if (ext == "ico") return "image/x-icon";
  return "application/octet-stream";
}

}  // namespace

std::optional<WebAsset> FindWebAsset(std::string_view path, const std::string& web_dir) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  std::string_view name = path == "/" ? std::string_view("index.html") : path.substr(1);
  if (name.empty() || name.find('/') != std::string_view::npos ||
      name.find("..") != std::string_view::npos || name.front() == '.') {
    return std::nullopt;
  }
  if (!web_dir.empty()) {
    std::ifstream in(web_dir + "/" + std::string(name), std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream body;
    body << in.rdbuf();
    return WebAsset{ContentType(name), body.str()};
  }
  for (const auto& file : EmbeddedWebFiles()) {
    if (file.name == name) return WebAsset{ContentType(name), std::string(file.data)};
  }
  return std::nullopt;
}

}  // namespace agentwire::gateway
