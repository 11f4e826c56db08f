#include "policy/trust.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "liaison/keys.h"
#include "policy/signing.h"

namespace liaison::policy {
namespace {

namespace fs = std::filesystem;

// Agency files of DIR/agencies, by name.
std::vector<fs::path> AgencyFiles(const std::string& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "agencies", ec)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The rotation statements of DIR/dpo-keys for `agency` that carry a valid
// signature, with the keys that signed them.
struct SignedRotation {
  RotationStatement statement;
  std::vector<std::string> signers;  // raw public keys with a valid signature
};

std::vector<SignedRotation> Rotations(const std::string& dir, const std::string& agency,
                                      std::vector<TrustProblem>* problems) {
  std::vector<SignedRotation> out;
  std::error_code ec;
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "dpo-keys", ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".rotation" && name.rfind(agency + ".", 0) == 0) paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& path : paths) {
    const std::string where = "dpo-keys/" + path.filename().string();
    auto bytes = ReadFileBytes(path.string());
    auto sigs = ReadSignatures(path.string() + ".sig");
    if (!bytes.ok() || !sigs.ok()) {
      problems->push_back({where, agency, "unreadable", (bytes.ok() ? sigs.status() : bytes.status()).message()});
      continue;
    }
    auto statement = ParseRotation(*bytes, (fs::path(dir) / where).string());
    if (!statement.ok()) {
      problems->push_back({where, agency, "bad_rotation", statement.status().message()});
      continue;
    }
    if (statement->agency != agency) continue;
    SignedRotation r{*statement, {}};
    for (const auto& sig : *sigs) {
      if (VerifySignature(*bytes, sig)) r.signers.push_back(sig.public_key);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// The keys that `pinned` leads to through signed rotation statements, in
// order, starting with `pinned` itself.
std::vector<std::string> KeyChain(const std::string& pinned, const std::vector<SignedRotation>& rotations) {
  std::vector<std::string> chain = {pinned};
  for (size_t step = 0; step < rotations.size(); ++step) {
    const std::string& current = chain.back();
    const std::string fp = DpoFingerprint(current);
    bool advanced = false;
    for (const auto& r : rotations) {
      const bool signed_by_current =
          std::find(r.signers.begin(), r.signers.end(), current) != r.signers.end();
      const bool seen = std::find(chain.begin(), chain.end(), r.statement.new_public_key) != chain.end();
      if (r.statement.old_fingerprint == fp && signed_by_current && !seen) {
        chain.push_back(r.statement.new_public_key);
        advanced = true;
        break;
      }
    }
    if (!advanced) break;
  }
  return chain;
}

std::string Fingerprints(const std::vector<DpoSignature>& sigs) {
  std::string out;
  for (const auto& s : sigs) out += (out.empty() ? "" : ", ") + s.fingerprint();
  return out.empty() ? "none" : out;
}

// Checks one agency file; updates `report` (its file entry, pin, problems).
void CheckAgencyFile(const std::string& dir, const fs::path& path, const Pins& pins, TrustReport* report) {
  const std::string agency = path.stem().string();
  const std::string rel = "agencies/" + path.filename().string();
  const std::string shown = (fs::path(dir) / rel).string();
  auto bytes = ReadFileBytes(path.string());
  if (!bytes.ok()) {
    report->problems.push_back({rel, agency, "unreadable", bytes.status().message()});
    return;
  }
  PolicyFile file{rel, agency, FileSha256(*bytes), ""};
  auto sigs = ReadSignatures(path.string() + ".sig");
  if (!sigs.ok()) {
    report->problems.push_back({rel, agency, "bad_signature_file", sigs.status().message()});
    report->files.push_back(file);
    return;
  }
  auto signed_by = [&](const std::string& key) {
    return std::any_of(sigs->begin(), sigs->end(),
                       [&](const DpoSignature& s) { return s.public_key == key && VerifySignature(*bytes, s); });
  };
  const std::string how_to_sign = "; ask " + agency + "'s DPO to review it and run `liaison policy sign " + shown +
                                  " --key " + agency + ".dpo.key`";
  auto pinned = pins.find(agency);
  if (pinned == pins.end()) {
    // Onboarding: the key the operator placed in dpo-keys/ beside the file.
    const std::string pub_path = (fs::path(dir) / "dpo-keys" / (agency + ".pub")).string();
    auto key = LoadDpoPublicKey(pub_path);
    if (!key.ok()) {
      report->problems.push_back(
          {rel, agency, "no_dpo_key",
           shown + ": agency " + agency + " has no pinned DPO key and " + key.status().message() +
               "; to onboard it, put its DPO's public key (`liaison keygen --dpo-key`) at " + pub_path});
    } else if (!signed_by(*key)) {
      report->problems.push_back({rel, agency, sigs->empty() ? "unsigned" : "wrong_signer",
                                  shown + ": not signed by the DPO key being onboarded for " + agency + " (" +
                                      DpoFingerprint(*key) + "; signatures found: " + Fingerprints(*sigs) + ")" +
                                      how_to_sign});
    } else {
      file.signer = DpoFingerprint(*key);
      report->pins[agency] = {*key, file.signer};
      report->changes.push_back({false, agency, "", file.signer});
    }
    report->files.push_back(file);
    return;
  }
  const auto chain = KeyChain(pinned->second.public_key, Rotations(dir, agency, &report->problems));
  for (size_t i = chain.size(); i-- > 0;) {
    if (!signed_by(chain[i])) continue;
    file.signer = DpoFingerprint(chain[i]);
    if (i > 0) {
      report->pins[agency] = {chain[i], file.signer};
      report->changes.push_back({true, agency, pinned->second.fingerprint, file.signer});
    }
    break;
  }
  if (file.signer.empty()) {
    const bool by_pinned_key = std::any_of(sigs->begin(), sigs->end(), [&](const DpoSignature& s) {
      return std::find(chain.begin(), chain.end(), s.public_key) != chain.end();
    });
    // bad_signature: the DPO signed other bytes (the file changed since).
    report->problems.push_back(
        {rel, agency, sigs->empty() ? "unsigned" : by_pinned_key ? "bad_signature" : "wrong_signer",
         shown + ": " + (sigs->empty() ? "not signed" : "no valid signature") + " by " + agency +
             "'s pinned DPO key " + pinned->second.fingerprint + " (signatures found: " + Fingerprints(*sigs) +
             ")" + how_to_sign + "; a new DPO key needs a rotation statement signed by the old one (`liaison "
             "policy rotate-key`)"});
  }
  report->files.push_back(file);
}

}  // namespace

StatusOr<Pins> LoadPins(const std::string& path) {
  Pins pins;
  std::error_code ec;
  if (!fs::exists(path, ec)) return pins;
  auto text = ReadFileBytes(path);
  if (!text.ok()) return text.status();
  std::istringstream lines(*text);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string agency, hex;
    words >> agency >> hex;
    std::string raw;
    bool good = hex.size() == 64;
    for (size_t i = 0; good && i < hex.size(); i += 2) {
      const std::string byte = hex.substr(i, 2);
      if (byte.find_first_not_of("0123456789abcdef") != std::string::npos) good = false;
      else raw.push_back(static_cast<char>(std::stoi(byte, nullptr, 16)));
    }
    if (agency.empty() || !good) {
      return Status::Corruption(path + ":" + std::to_string(n) +
                                ": not a pin (\"AGENCY <public key hex>\"); restore the file from backup: "
                                "the ledger's dpo_key_pinned and dpo_key_rotated records name every pin");
    }
    pins[agency] = {raw, DpoFingerprint(raw)};
  }
  return pins;
}

Status SavePins(const std::string& path, const Pins& pins) {
  std::string text =
      "# DPO keys pinned by the broker (agency, Ed25519 public key). Written by the broker;\n"
      "# every change is in the ledger (dpo_key_pinned, dpo_key_rotated).\n";
  for (const auto& [agency, pin] : pins) text += agency + " " + HexEncode(pin.public_key.data(), 32) + "\n";
  const std::string tmp = path + ".tmp";
  if (auto st = MakeOwnerOnlyFile(tmp); !st.ok()) return st;
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write " + tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::IoError("cannot rename " + tmp + " to " + path + ": " + ec.message());
  return Status::Ok();
}

std::string TrustReport::Message() const {
  std::string out;
  for (const auto& p : problems) out += (out.empty() ? "" : "\n") + p.message;
  return out;
}

TrustReport CheckPolicySignatures(const std::string& dir, const Pins& pins, uint32_t vocabulary_quorum) {
  TrustReport report;
  report.pins = pins;
  const std::string vocabulary = (fs::path(dir) / "vocabulary.yaml").string();
  auto bytes = ReadFileBytes(vocabulary);
  PolicyFile vocab{"vocabulary.yaml", "", bytes.ok() ? FileSha256(*bytes) : "", ""};
  report.files.push_back(vocab);
  for (const auto& path : AgencyFiles(dir)) CheckAgencyFile(dir, path, pins, &report);

  if (!bytes.ok()) {
    report.problems.push_back({"vocabulary.yaml", "", "unreadable", bytes.status().message()});
    return report;
  }
  auto sigs = ReadSignatures(vocabulary + ".sig");
  if (!sigs.ok()) {
    report.problems.push_back({"vocabulary.yaml", "", "bad_signature_file", sigs.status().message()});
    return report;
  }
  // Quorum over the pins this set would go live with (an agency onboarded
  // in this very set counts: its key was just checked on its own file).
  std::set<std::string> agencies;
  std::string signers;
  for (const auto& sig : *sigs) {
    for (const auto& [agency, pin] : report.pins) {
      if (pin.public_key == sig.public_key && VerifySignature(*bytes, sig) && agencies.insert(agency).second) {
        signers += (signers.empty() ? "" : ",") + pin.fingerprint;
      }
    }
  }
  report.files.front().signer = signers;
  if (agencies.size() < vocabulary_quorum) {
    std::string who;
    for (const auto& a : agencies) who += (who.empty() ? "" : ", ") + a;
    report.problems.push_back(
        {"vocabulary.yaml", "", "vocabulary_quorum",
         vocabulary + ": signed by the pinned DPO keys of " + std::to_string(agencies.size()) + " agenc" +
             (agencies.size() == 1 ? "y" : "ies") + (who.empty() ? "" : " (" + who + ")") + ", needs " +
             std::to_string(vocabulary_quorum) + " (policy_signing.vocabulary_quorum); ask more agencies' DPOs "
             "to review it and run `liaison policy sign " + vocabulary + " --key AGENCY.dpo.key`"});
  }
  return report;
}

StatusOr<std::vector<PolicyFile>> DescribePolicyFiles(const std::string& dir) {
  std::vector<fs::path> paths = {fs::path(dir) / "vocabulary.yaml"};
  for (const auto& p : AgencyFiles(dir)) paths.push_back(p);
  std::vector<PolicyFile> out;
  for (size_t i = 0; i < paths.size(); ++i) {
    auto bytes = ReadFileBytes(paths[i].string());
    if (!bytes.ok()) return bytes.status();
    PolicyFile f{i == 0 ? "vocabulary.yaml" : "agencies/" + paths[i].filename().string(),
                 i == 0 ? "" : paths[i].stem().string(), FileSha256(*bytes), ""};
    auto sigs = ReadSignatures(paths[i].string() + ".sig");
    if (sigs.ok()) {
      for (const auto& s : *sigs) {
        if (VerifySignature(*bytes, s)) f.signer += (f.signer.empty() ? "" : ",") + s.fingerprint();
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace liaison::policy
