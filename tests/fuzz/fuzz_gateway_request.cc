// libFuzzer target: the gateway's request handling before any store or
// broker: the HTTP/1.1 parser with the gateway's limits, routing, id and
// query decoding, and the preparation of a POST /v1/messages body.
#include <utility>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>

#include "request.h"

using namespace liaison;
namespace beast = boost::beast;
namespace http = beast::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1 << 20);
  parser.eager(true);
  beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_done()) return 0;
  const auto& req = parser.get();
  const gateway::Route route = gateway::Classify(std::string_view(req.target().data(), req.target().size()));
  if (route.id_ok && !gateway::ValidId(route.id)) __builtin_trap();
  if (auto wait = gateway::QueryValue(route.query, "wait")) (void)gateway::ParseUint(*wait);
  if (route.kind == gateway::Route::Kind::kMessages) {
    auto prepared = gateway::PrepareMessage(codec, std::string_view(req.body()));
    if (prepared.ok()) {
      if (wire::VerifyEnvelope(prepared->envelope) == nullptr) __builtin_trap();
      if (!gateway::ValidId(prepared->id)) __builtin_trap();
    }
  }
  return 0;
}
