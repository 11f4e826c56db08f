#include "policy/schema_layout.h"

#include <algorithm>
#include <cstdlib>

namespace liaison::policy {
namespace {

using reflection::BaseType;

bool IsScalar(BaseType t) { return t >= BaseType::UType && t <= BaseType::Double; }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<const reflection::Field*> FieldsInIdOrder(const reflection::Object& object) {
  std::vector<const reflection::Field*> fields(object.fields()->begin(), object.fields()->end());
  std::sort(fields.begin(), fields.end(),
            [](const auto* a, const auto* b) { return a->id() < b->id(); });
  return fields;
}

// Adds the node for `object` at `path` and, recursively, its children.
int AddNode(const reflection::Schema& schema, const reflection::Object& object,
            const std::string& path, PayloadLayout& layout) {
  const int index = static_cast<int>(layout.nodes.size());
  layout.nodes.push_back({});
  layout.nodes[index].path = path;
  layout.nodes[index].object = &object;
  layout.nodes[index].is_address = object.name()->string_view() == "liaison.wire.PostalAddress";
  layout.nodes[index].first_leaf = static_cast<int>(layout.leaves.size());
  for (const reflection::Field* field : FieldsInIdOrder(object)) {
    if (field->deprecated()) continue;
    const std::string name = field->name()->str();
    const std::string child_path = path.empty() ? name : path + "." + name;
    const BaseType type = field->type()->base_type();
    NodeField nf{field};
    if (type == BaseType::Obj ||
        (type == BaseType::Vector && field->type()->element() == BaseType::Obj)) {
      nf.vector_of_tables = type == BaseType::Vector;
      nf.child = AddNode(schema, *schema.objects()->Get(field->type()->index()), child_path, layout);
    } else {
      Leaf leaf{child_path, field, LeafKind::kScalar};
      if (type == BaseType::String) {
        leaf.kind = LeafKind::kString;
      } else if (type == BaseType::Vector) {
        leaf.kind = field->type()->element() == BaseType::String ? LeafKind::kStringVector
                                                                  : LeafKind::kScalarVector;
      } else if (!IsScalar(type)) {
        std::abort();  // unions inside payloads are not part of the contract
      }
      leaf.is_date = leaf.kind == LeafKind::kString &&
                     (name == "date_of_birth" || EndsWith(name, "_date") || EndsWith(name, "_at"));
      leaf.is_birth_date = name == "date_of_birth";
      if (layout.nodes[index].is_address) {
        auto it = std::find(kAddressParts.begin(), kAddressParts.end(), name);
        if (it != kAddressParts.end()) leaf.address_part = static_cast<int>(it - kAddressParts.begin());
      }
      nf.leaf = static_cast<int>(layout.leaves.size());
      layout.leaves.push_back(std::move(leaf));
    }
    layout.nodes[index].fields.push_back(nf);
  }
  layout.nodes[index].end_leaf = static_cast<int>(layout.leaves.size());
  return index;
}

const reflection::Field& FieldOf(const reflection::Object& object, const char* name) {
  const reflection::Field* field = object.fields()->LookupByKey(name);
  if (!field) std::abort();  // the embedded schema lost a header field
  return *field;
}

// Appends the header text leaves (kHeaderTextPaths) and the "header" and
// "header.consent" nodes that group them.
void AddHeaderText(const reflection::Schema& schema, PayloadLayout& layout) {
  const reflection::Object& envelope = *schema.objects()->LookupByKey("liaison.wire.Envelope");
  const reflection::Object& consent = *schema.objects()->LookupByKey("liaison.wire.Consent");
  layout.first_header_leaf = static_cast<int>(layout.leaves.size());
  const std::array<const reflection::Field*, 3> fields = {&FieldOf(consent, "scope"),
                                                          &FieldOf(envelope, "handling_restrictions"),
                                                          &FieldOf(envelope, "break_glass")};
  for (size_t i = 0; i < fields.size(); ++i) {
    layout.leaves.push_back({std::string(kHeaderTextPaths[i]), fields[i], LeafKind::kString});
  }
  const int first = layout.first_header_leaf;
  const int scope = layout.HeaderLeaf(HeaderText::kConsentScope);
  const int header = static_cast<int>(layout.nodes.size());
  layout.nodes.push_back({"header", &envelope, {}, false, first, first + 3});
  layout.nodes.push_back({"header.consent", &consent, {{fields[0], scope}}, false, scope, scope + 1});
  layout.nodes[header].fields = {{&FieldOf(envelope, "consent"), -1, header + 1},
                                 {fields[1], layout.HeaderLeaf(HeaderText::kHandlingRestrictions)},
                                 {fields[2], layout.HeaderLeaf(HeaderText::kBreakGlass)}};
}

}  // namespace

const SchemaLayout& SchemaLayout::Get() {
  static const SchemaLayout* layout = new SchemaLayout();
  return *layout;
}

SchemaLayout::SchemaLayout() {
  const reflection::Schema& schema = wire::EnvelopeSchema();
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    const auto type = static_cast<wire::Payload>(tag);
    const std::string name = wire::EnumNamePayload(type);
    const reflection::Object* object = schema.objects()->LookupByKey(("liaison.wire." + name).c_str());
    if (!object) std::abort();  // the embedded schema and the generated code disagree
    PayloadLayout& layout = payloads_[tag];
    layout.type = type;
    layout.name = name;
    AddNode(schema, *object, "", layout);
    AddHeaderText(schema, layout);
    type_names_.push_back(name);
  }
}

const PayloadLayout* SchemaLayout::For(wire::Payload type) const {
  const size_t tag = static_cast<size_t>(type);
  if (tag == 0 || tag >= kPayloadTypes) return nullptr;
  return &payloads_[tag];
}

wire::Payload SchemaLayout::TypeByName(std::string_view name) const {
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    if (payloads_[tag].name == name) return payloads_[tag].type;
  }
  return wire::Payload::NONE;
}

}  // namespace liaison::policy
