// The messages as policies see them: for every payload type, the tree of its
// tables and the flat list of its leaf fields ("subject.date_of_birth",
// "attachments.sha256"), followed by the free-text header fields that rules
// govern like payload fields ("header.break_glass"), built once from the
// binary schema (FlatBuffers reflection). Policy paths are checked against it
// at load time; compiled rules and the rewriter address leaves by index,
// never by string.
#ifndef LIAISON_BROKER_POLICY_SCHEMA_LAYOUT_H_
#define LIAISON_BROKER_POLICY_SCHEMA_LAYOUT_H_

#include <flatbuffers/reflection.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/wire.h"

namespace liaison::policy {

// Payload types are the union's members; index = the union tag (1..6).
inline constexpr size_t kPayloadTypes = static_cast<size_t>(wire::Payload::MAX) + 1;

enum class LeafKind : uint8_t { kScalar, kString, kStringVector, kScalarVector };

struct Leaf {
  std::string path;                  // "subject.address.county"
  const reflection::Field* field;
  LeafKind kind;
  bool is_date = false;              // a string holding a date or time
  bool is_birth_date = false;        // ... a date of birth
  int address_part = -1;             // index in kAddressParts when in a PostalAddress
};

// One table in the tree. A field is either a leaf or leads to a child node
// (a table, or a vector of tables).
struct NodeField {
  const reflection::Field* field;
  int leaf = -1;                 // index into PayloadLayout::leaves
  int child = -1;                // index into PayloadLayout::nodes
  bool vector_of_tables = false;
};

struct Node {
  std::string path;              // "" for the payload root, else "subject.address"
  const reflection::Object* object;
  std::vector<NodeField> fields; // in schema (id) order
  bool is_address = false;       // a PostalAddress: generalize(county|sub_county) applies
  int first_leaf = 0;            // leaves [first_leaf, end_leaf) lie under this node
  int end_leaf = 0;
};

// Header fields that can hold personal data (free text), and so go by the
// rules like payload fields; the structured header fields (purpose, legal
// basis, handling code, urgency, grading, dates, ids) pass unchanged.
enum class HeaderText : uint8_t { kConsentScope, kHandlingRestrictions, kBreakGlass };
inline constexpr std::array<std::string_view, 3> kHeaderTextPaths = {
    "header.consent.scope", "header.handling_restrictions", "header.break_glass"};

struct PayloadLayout {
  wire::Payload type = wire::Payload::NONE;
  std::string name;              // "CaseReferral"
  // nodes[0] is the payload root; the payload's nodes, then "header" and
  // "header.consent" (for group patterns; the rewriter walks only the payload).
  std::vector<Node> nodes;
  // The payload's leaves, then from first_header_leaf the header text leaves
  // in HeaderText order (their `field` is Envelope's or Consent's).
  std::vector<Leaf> leaves;
  int first_header_leaf = 0;
  int HeaderLeaf(HeaderText t) const { return first_header_leaf + static_cast<int>(t); }
};

// PostalAddress fields, from the most precise to the least.
inline constexpr std::array<std::string_view, 5> kAddressParts = {"street", "ward", "sub_county",
                                                                  "county", "country"};

class SchemaLayout {
 public:
  // The layout of the embedded envelope schema (built on first use).
  static const SchemaLayout& Get();

  // nullptr for NONE or an unknown tag.
  const PayloadLayout* For(wire::Payload type) const;
  // Payload type by name ("CaseReferral"); NONE if unknown.
  wire::Payload TypeByName(std::string_view name) const;
  const std::vector<std::string>& type_names() const { return type_names_; }

 private:
  SchemaLayout();
  std::array<PayloadLayout, kPayloadTypes> payloads_;
  std::vector<std::string> type_names_;
};

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_SCHEMA_LAYOUT_H_
