# Writes the bytes of IN as a C++ array named SYMBOL (plus its size) to OUT.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT}
  "// Generated from ${IN}. Do not edit.\n"
  "#include <cstddef>\n#include <cstdint>\n"
  "namespace liaison::wire {\n"
  "extern const uint8_t ${SYMBOL}[];\nextern const size_t ${SYMBOL}Size;\n"
  "alignas(8) const uint8_t ${SYMBOL}[] = {${bytes}};\n"
  "const size_t ${SYMBOL}Size = ${size};\n"
  "}  // namespace liaison::wire\n")
