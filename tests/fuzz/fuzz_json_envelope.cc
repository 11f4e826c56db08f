// libFuzzer target: the one JSON -> FlatBuffers conversion (what `liaison
// send`, `policy explain` and the gateway do with a message). Whatever the
// input: no crash; what converts is a valid Envelope; printing it and
// parsing the print again gives the same print.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "liaison/wire.h"

using namespace liaison;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!binary.ok()) return 0;
  if (wire::VerifyEnvelope(*binary) == nullptr) __builtin_trap();
  auto text = codec.ToJson(*binary, /*pretty=*/false);
  if (!text.ok()) return 0;  // text that is not UTF-8 cannot be printed: refused, not crashed
  auto again = codec.ToBinary(*text, "fuzz-print");
  if (!again.ok()) __builtin_trap();
  auto text_again = codec.ToJson(*again, false);
  if (!text_again.ok() || *text_again != *text) __builtin_trap();
  return 0;
}
