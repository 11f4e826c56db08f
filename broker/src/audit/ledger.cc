#include "audit/ledger.h"

#include "liaison/keys.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <cstdlib>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <flatbuffers/util.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace liaison::audit {
namespace {

std::string Hex(const unsigned char* data, size_t n) { return HexEncode(data, n); }

std::string Sha256Hex(std::string_view text) {
  // Fetched once: SHA256() looks the algorithm up again for every record.
  static EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int size = 0;
  if (!sha256 || EVP_Digest(text.data(), text.size(), digest, &size, sha256, nullptr) != 1 ||
      size != sizeof digest) {
    std::abort();  // no SHA-256: the ledger cannot chain, and must not pretend to
  }
  return Hex(digest, sizeof digest);
}

std::string CheckpointMessage(uint64_t seq, const std::string& hash) {
  return "liaison-ledger|" + std::to_string(seq) + "|" + hash;
}

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// Splits "json\thash"; false if the line has no tab.
bool SplitLine(const std::string& line, std::string* json, std::string* hash) {
  const auto tab = line.rfind('\t');
  if (tab == std::string::npos) return false;
  *json = line.substr(0, tab);
  *hash = line.substr(tab + 1);
  return true;
}

}  // namespace

Status WriteSigningKey(const std::string& dir, const std::string& name) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  const bool made = ctx && EVP_PKEY_keygen_init(ctx) > 0 && EVP_PKEY_keygen(ctx, &key) > 0;
  EVP_PKEY_CTX_free(ctx);
  if (!made) return Status::Internal("cannot make an Ed25519 key");
  std::shared_ptr<EVP_PKEY> owned(key, EVP_PKEY_free);
  const std::string base = (std::filesystem::path(dir) / name).string();
  int fd = ::open((base + ".key").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    return Status::IoError("cannot create " + base + ".key: " + std::strerror(errno) +
                           (errno == EEXIST ? " (remove it first to replace the key)" : ""));
  }
  FILE* f = fdopen(fd, "w");
  if (!f) ::close(fd);
  // fclose flushes: its result tells whether the key reached the file.
  bool wrote = f && PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (f) wrote = (fflush(f) == 0 && fsync(fileno(f)) == 0 && wrote) & (fclose(f) == 0);
  FILE* pub = fopen((base + ".pub").c_str(), "w");
  bool wrote_pub = pub && PEM_write_PUBKEY(pub, key) == 1;
  if (pub) wrote_pub = (fclose(pub) == 0) && wrote_pub;
  if (!wrote || !wrote_pub) return Status::IoError("cannot write the key files " + base + ".{key,pub}");
  return Status::Ok();
}

StatusOr<std::shared_ptr<EVP_PKEY>> LoadSigningKey(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound("ledger signing key " + path + ": " + std::strerror(errno) +
                            " (create one with `liaison keygen --ledger-key DIR`)");
  }
  if ((st.st_mode & 077) != 0) {
    return Status::PermissionDenied("ledger signing key " + path +
                                    " is readable by group or others; run `chmod 600 " + path + "`");
  }
  FILE* f = fopen(path.c_str(), "r");
  EVP_PKEY* key = f ? PEM_read_PrivateKey(f, nullptr, nullptr, nullptr) : nullptr;
  if (f) fclose(f);
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    return Status::InvalidArgument("ledger signing key " + path + " is not an Ed25519 private key (PEM)");
  }
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

StatusOr<std::shared_ptr<EVP_PKEY>> LoadVerifyKey(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return Status::NotFound("cannot open the ledger public key " + path);
  EVP_PKEY* key = PEM_read_PUBKEY(f, nullptr, nullptr, nullptr);
  fclose(f);
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    return Status::InvalidArgument(path + " is not an Ed25519 public key (PEM)");
  }
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

std::string SigningKeyFingerprint(EVP_PKEY* key) {
  unsigned char raw[32];
  size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1) return "unknown";
  return Sha256Hex(std::string_view(reinterpret_cast<char*>(raw), len)).substr(0, 16);
}

std::array<uint8_t, 32> DeriveCaseKey(std::string_view pseudonym_secret) {
  return DeriveKey(pseudonym_secret, "", "liaison ledger case v1");
}

std::string ReferralLink(std::string_view referral_sender, std::string_view referral_id) {
  std::string text(referral_sender);
  text.push_back('\0');
  text.append(referral_id);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return HexEncode(digest, 16);
}

std::string CasePseudonym(const std::array<uint8_t, 32>& key, std::string_view sender,
                          std::string_view case_ref) {
  if (case_ref.empty()) return "";
  unsigned char out[32];
  HmacSha256Pair(key, sender, case_ref, out);
  return Hex(out, 12);
}

std::string ThreadId(const std::array<uint8_t, 32>& key, std::string_view root) {
  if (root.empty()) return "";
  unsigned char out[32];
  // A control character: no agency id (a vocabulary id) starts with one, so
  // no case pseudonym is ever a thread id.
  HmacSha256Pair(key, "\x01thread", root, out);
  return Hex(out, 12);
}

namespace {

// The seq and prev of a record line ("json\thash"), if it is one whose
// content matches its hash.
struct LineHead {
  uint64_t seq = 0;
  std::string prev, hash;
};
std::optional<LineHead> ReadHead(wire::JsonCodec& codec, const std::string& line, const std::string& path) {
  std::string json, hash;
  if (!SplitLine(line, &json, &hash) || Sha256Hex(json) != hash) return std::nullopt;
  auto binary = codec.ToBinary(json, path);
  if (!binary.ok()) return std::nullopt;
  const auto* record = flatbuffers::GetRoot<ledger::LedgerRecord>(binary->data());
  return LineHead{record->seq(), record->prev() ? record->prev()->str() : "", hash};
}

}  // namespace

StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string& path,
                                               std::shared_ptr<EVP_PKEY> signing_key,
                                               const std::array<uint8_t, 32>& case_key,
                                               uint64_t checkpoint_every,
                                               std::optional<uint64_t> committed_seq,
                                               const std::vector<LedgerLine>& committed_lines,
                                               bool store_is_authoritative) {
  std::unique_ptr<Ledger> ledger(new Ledger());
  ledger->path_ = path;
  ledger->key_ = std::move(signing_key);
  ledger->key_fingerprint_ = SigningKeyFingerprint(ledger->key_.get());
  ledger->case_key_ = case_key;
  ledger->checkpoint_every_ = checkpoint_every;
  ledger->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (ledger->fd_ < 0) {
    return Status::IoError("cannot open the ledger " + path + ": " + std::strerror(errno));
  }
  // Resume the chain from the last complete line (bounded by the file size).
  std::string text;
  struct stat st;
  if (::fstat(ledger->fd_, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    text.assign(static_cast<size_t>(st.st_size), '\0');
    if (::pread(ledger->fd_, text.data(), text.size(), 0) != st.st_size) {
      return Status::IoError("cannot read the ledger " + path);
    }
    const size_t end = text.rfind('\n');
    if (end + 1 != text.size()) {
      // A torn write: never acknowledged (acks follow the commit), so cut it.
      const off_t keep = end == std::string::npos ? 0 : static_cast<off_t>(end + 1);
      if (::ftruncate(ledger->fd_, keep) != 0) return Status::IoError("cannot repair the ledger " + path);
      ledger->repaired_bytes_ = text.size() - static_cast<size_t>(keep);
      text.resize(keep);
    }
  }
  // The last record of `text`, and where its line starts.
  auto last_line = [&](size_t* start) {
    const size_t end = text.size() - 1;
    const size_t before = end == 0 ? std::string::npos : text.rfind('\n', end - 1);
    *start = before == std::string::npos ? 0 : before + 1;
    return text.substr(*start, end - *start);
  };
  const size_t full_size = text.size();
  std::unordered_map<uint64_t, std::string_view> store_lines;
  if (store_is_authoritative) {
    for (const auto& [seq, line] : committed_lines) store_lines.emplace(seq, line);
  }
  while (!text.empty()) {
    size_t start = 0;
    const std::string line = last_line(&start);
    auto head = ReadHead(ledger->codec_, line, path);
    if (!head) {
      return Status::Corruption("the last record of the ledger " + path +
                                " does not match its hash; run `liaison audit verify`");
    }
    auto in_store = store_lines.find(head->seq);
    if ((committed_seq && head->seq > *committed_seq) ||
        (in_store != store_lines.end() && in_store->second != line)) {
      // Written for a batch whose store commit never happened (the broker
      // stopped in between): that batch was answered `unavailable`, so its
      // records are not part of what happened.
      ++ledger->uncommitted_cut_;
      text.resize(start);
      continue;
    }
    ledger->seq_ = head->seq;
    ledger->prev_ = head->hash;
    break;
  }
  if (ledger->uncommitted_cut_ > 0) {
    // Kept aside rather than destroyed: many such records mean the store
    // is older than the ledger (restored from a backup?), and an auditor
    // may want to see them.
    std::string cut;
    cut.resize(full_size - text.size());
    const std::string aside = path + ".uncommitted";
    const int out = ::open(aside.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    const bool kept = out >= 0 &&
                      ::pread(ledger->fd_, cut.data(), cut.size(), static_cast<off_t>(text.size())) ==
                          static_cast<ssize_t>(cut.size()) &&
                      ::write(out, cut.data(), cut.size()) == static_cast<ssize_t>(cut.size()) &&
                      ::fsync(out) == 0;
    if (out >= 0) ::close(out);
    if (!kept || ::ftruncate(ledger->fd_, static_cast<off_t>(text.size())) != 0) {
      return Status::IoError("cannot move the uncommitted end of the ledger " + path + " to " + aside + ": " +
                             std::strerror(errno));
    }
  }
  // Records the store committed that the file lost (the machine stopped
  // before the file reached the disk): the store still holds them.
  if (committed_seq && ledger->seq_ < *committed_seq) {
    std::string out;
    for (const auto& [seq, line] : committed_lines) {
      if (seq <= ledger->seq_) continue;
      auto head = ReadHead(ledger->codec_, line, path);
      if (seq != ledger->seq_ + 1 || !head || head->seq != seq || head->prev != ledger->prev_) {
        break;
      }
      out += line + "\n";
      ledger->seq_ = seq;
      ledger->prev_ = head->hash;
      ++ledger->restored_;
    }
    if (ledger->seq_ != *committed_seq) {
      return Status::Corruption("the ledger " + path + " ends at record " + std::to_string(ledger->seq_) +
                                " but the store committed records up to " + std::to_string(*committed_seq) +
                                " and no longer holds the ones in between; restore the ledger file from a "
                                "backup, or run `liaison audit verify` on it");
    }
    if (::write(ledger->fd_, out.data(), out.size()) != static_cast<ssize_t>(out.size()) ||
        ::fdatasync(ledger->fd_) != 0) {
      return Status::IoError("cannot complete the ledger " + path + ": " + std::strerror(errno));
    }
  }
  ledger->synced_seq_ = ledger->seq_;
  ledger->kept_seq_ = ledger->seq_;
  return ledger;
}

Ledger::~Ledger() {
  {
    std::lock_guard lock(sync_mu_);
    sync_stopping_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// The pieces of RecordJson, in the printer's layout: `"name": value`,
// fields joined by "," with no space, vector elements the same.
class JsonLine {
 public:
  explicit JsonLine(std::string* out) : out_(*out) { out_ += '{'; }
  void Number(const char* name, uint64_t value) {
    Name(name);
    out_ += std::to_string(value);
  }
  void String(const char* name, const std::string& value) {
    if (value.empty()) return;  // Pack leaves an empty string out
    Name(name);
    Escaped(value);
  }
  void Strings(const char* name, const std::vector<std::string>& values) {
    if (values.empty()) return;  // Pack leaves an empty vector out
    Name(name);
    out_ += '[';
    for (size_t i = 0; i < values.size(); ++i) {
      if (i) out_ += ',';
      Escaped(values[i]);
    }
    out_ += ']';
  }
  void Close() { out_ += '}'; }

 private:
  void Name(const char* name) {
    if (fields_++) out_ += ',';
    out_ += '"';
    out_ += name;
    out_ += "\": ";
  }
  void Escaped(const std::string& value) {
    // Names are plain printable ASCII: such a string the printer copies as
    // it is, between quotes (one append instead of one per character).
    if (std::all_of(value.begin(), value.end(), [](char c) { return c >= ' ' && c <= '~' && c != '"' && c != '\\'; })) {
      out_ += '"';
      out_ += value;
      out_ += '"';
      return;
    }
    // The printer's own escaping (strict JSON, natural UTF-8): the same bytes.
    if (!flatbuffers::EscapeString(value.data(), value.size(), &out_, /*allow_non_utf8=*/false,
                                   /*natural_utf8=*/true)) {
      std::abort();  // only names go in; they are valid UTF-8 (the printer refuses the rest too)
    }
  }
  std::string& out_;
  int fields_ = 0;
};

}  // namespace

std::string RecordJson(const ledger::LedgerRecordT& r) {
  std::string out;
  out.reserve(768);
  JsonLine j(&out);
  j.Number("seq", r.seq);
  j.String("prev", r.prev);
  j.String("time", r.time);
  // A scalar: printed even at its default (released).
  if (const char* name = ledger::EnumNameDecision(r.decision); *name) {
    j.String("decision", name);
  } else {
    j.Number("decision", static_cast<uint64_t>(static_cast<int8_t>(r.decision)));
  }
  j.String("message_id", r.message_id);
  j.String("case", r.case_);
  j.String("sender", r.sender);
  j.String("recipient", r.recipient);
  j.String("type", r.type);
  j.String("purpose", r.purpose);
  j.String("legal_basis", r.legal_basis);
  j.String("handling", r.handling);
  j.Strings("rules", r.rules);
  j.Strings("released", r.released);
  j.Strings("transformed", r.transformed);
  j.Strings("dropped", r.dropped);
  j.String("reason", r.reason);
  j.String("policy_version", r.policy_version);
  j.String("signature", r.signature);
  j.String("key_fingerprint", r.key_fingerprint);
  j.String("sender_kind", r.sender_kind);
  j.String("sender_region", r.sender_region);
  j.String("recipient_kind", r.recipient_kind);
  j.String("recipient_region", r.recipient_region);
  j.String("urgency", r.urgency);
  j.String("response", r.response);
  j.String("agency", r.agency);
  j.String("file", r.file);
  j.String("file_hash", r.file_hash);
  j.String("signer", r.signer);
  j.String("previous_signer", r.previous_signer);
  j.String("in_reply_to", r.in_reply_to);
  // Scalars: printed even at their default (0), as seq is.
  j.Number("late_seconds", r.late_seconds);
  j.Number("deadline_seconds", r.deadline_seconds);
  j.String("thread", r.thread);
  j.Strings("permission", r.permission);
  j.Close();
  return out;
}

void Ledger::Add(const Entry& entry) { batch_.push_back(entry); }
void Ledger::Add(Entry&& entry) { batch_.push_back(std::move(entry)); }

std::string Ledger::Line(ledger::LedgerRecordT& record, const std::string& time) {
  record.seq = seq_ + 1;
  record.prev = prev_;
  record.time = time;
  std::string line = RecordJson(record);
  const std::string hash = Sha256Hex(line);
  ++seq_;
  prev_ = hash;
  line += '\t';
  line += hash;
  return line;
}

std::vector<Entry> Ledger::TakeBatch() {
  std::vector<Entry> batch;
  batch.swap(batch_);
  return batch;
}

StatusOr<std::vector<LedgerLine>> Ledger::Write(bool checkpoint) { return Write(TakeBatch(), checkpoint); }

StatusOr<std::vector<LedgerLine>> Ledger::Write(std::vector<Entry> batch, bool checkpoint) {
  std::vector<LedgerLine> lines;
  if (undo_) return Status::Internal("ledger: a written batch is neither kept nor undone");
  if (batch.empty() && !(checkpoint && since_checkpoint_ > 0)) return lines;
  if (cut_failed_) {
    // What follows would land after records of a batch that never
    // committed: refuse (fail closed) until a restart, whose Open matches
    // the file to the store.
    ++failures_;
    return Status::IoError("the ledger " + path_ +
                           " could not be cut back after a failed batch; it takes no more records until the "
                           "broker restarts (the start matches the file to the store)");
  }
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::IoError("cannot read the size of the ledger " + path_);
  const Rewind undo{seq_, prev_, since_checkpoint_, st.st_size};
  // One time for the batch: its records are written at one moment.
  const std::string now = wire::NowRfc3339();
  for (Entry& e : batch) {
    ledger::LedgerRecordT r;
    r.decision = std::move(e.decision);
    r.message_id = std::move(e.message_id);
    r.case_ = e.case_ref.empty() ? std::move(e.case_pseudonym) : CasePseudonym(case_key_, e.sender, e.case_ref);
    r.sender = std::move(e.sender);
    r.recipient = std::move(e.recipient);
    r.type = std::move(e.type);
    r.purpose = std::move(e.purpose);
    r.legal_basis = std::move(e.legal_basis);
    r.handling = std::move(e.handling);
    r.rules = std::move(e.rules);
    r.released = std::move(e.released);
    r.transformed = std::move(e.transformed);
    r.dropped = std::move(e.dropped);
    r.reason = std::move(e.reason);
    r.policy_version = std::move(e.policy_version);
    r.sender_kind = std::move(e.sender_kind);
    r.sender_region = std::move(e.sender_region);
    r.recipient_kind = std::move(e.recipient_kind);
    r.recipient_region = std::move(e.recipient_region);
    r.urgency = std::move(e.urgency);
    r.response = std::move(e.response);
    r.agency = std::move(e.agency);
    r.file = std::move(e.file);
    r.file_hash = std::move(e.file_hash);
    r.signer = std::move(e.signer);
    r.previous_signer = std::move(e.previous_signer);
    r.in_reply_to = std::move(e.in_reply_to);
    r.late_seconds = e.late_seconds;
    r.deadline_seconds = e.deadline_seconds;
    r.thread = std::move(e.thread);
    r.permission = std::move(e.permission);
    std::string line = Line(r, now);  // advances seq_
    lines.emplace_back(seq_, std::move(line));
    ++since_checkpoint_;
  }
  if (since_checkpoint_ > 0 && (checkpoint || since_checkpoint_ >= checkpoint_every_)) {
    const std::string message = CheckpointMessage(seq_, prev_);
    unsigned char sig[64];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const bool signed_ok = ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key_.get()) == 1 &&
                           EVP_DigestSign(ctx, sig, &sig_len,
                                          reinterpret_cast<const unsigned char*>(message.data()),
                                          message.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!signed_ok) {
      seq_ = undo.seq;
      prev_ = undo.prev;
      since_checkpoint_ = undo.since;
      ++failures_;
      return Status::Internal("cannot sign a ledger checkpoint (OpenSSL)");
    }
    ledger::LedgerRecordT c;
    c.decision = ledger::Decision::checkpoint;
    c.signature = Hex(sig, sig_len);
    c.key_fingerprint = key_fingerprint_;
    std::string line = Line(c, now);
    lines.emplace_back(seq_, std::move(line));
    since_checkpoint_ = 0;
  }
  std::string out;
  for (const auto& [seq, line] : lines) out += line + "\n";
  if (const ssize_t n = ::write(fd_, out.data(), out.size()); n != static_cast<ssize_t>(out.size())) {
    const std::string why = n < 0 ? std::strerror(errno) : "short write (is the disk full?)";
    undo_ = undo;
    Undo();
    ++failures_;
    return Status::IoError("cannot write the ledger " + path_ + ": " + why);
  }
  undo_ = undo;
  return lines;
}

void Ledger::Keep() {
  undo_.reset();
  kept_seq_ = seq_;
}

void Ledger::Undo() {
  if (!undo_) return;
  // Cut back whatever part of the batch reached the file: the chain stays
  // whole. If even that fails, no more records are written (Write), and the
  // next start cuts the file by the store's position.
  if (::ftruncate(fd_, undo_->size) != 0) {
    ++failures_;
    cut_failed_ = true;
  }
  seq_ = undo_->seq;
  prev_ = undo_->prev;
  since_checkpoint_ = undo_->since;
  undo_.reset();
}

StatusOr<uint64_t> Ledger::Sync() {
  const uint64_t reached = kept_seq_;
  {
    std::lock_guard lock(sync_mu_);
    if (sync_failed_) return Status::IoError("an earlier sync of the ledger " + path_ + " failed");
    if (synced_seq_ >= reached) return synced_seq_;
  }
  if (::fdatasync(fd_) != 0) {
    const int error = errno;
    ++failures_;
    std::lock_guard lock(sync_mu_);
    sync_failed_ = true;
    return Status::IoError("cannot sync the ledger " + path_ + ": " + std::strerror(error));
  }
  std::lock_guard lock(sync_mu_);
  synced_seq_ = std::max(synced_seq_, reached);
  return synced_seq_;
}

StatusOr<uint64_t> Ledger::SyncInBackground() {
  const uint64_t reached = kept_seq_;
  std::lock_guard lock(sync_mu_);
  if (sync_error_) {
    Status error = std::move(*sync_error_);
    sync_error_.reset();
    return error;
  }
  if (!sync_running_ && !sync_failed_ && reached > synced_seq_) {
    if (!syncer_.joinable()) syncer_ = std::thread([this] { SyncLoop(); });
    sync_target_ = reached;
    sync_running_ = true;
    sync_cv_.notify_all();
  }
  return synced_seq_;
}

void Ledger::SyncLoop() {
  std::unique_lock lock(sync_mu_);
  while (true) {
    sync_cv_.wait(lock, [&] { return sync_running_ || sync_stopping_; });
    if (sync_stopping_) return;  // the owner's Sync() at shutdown covers it
    const uint64_t target = sync_target_;
    lock.unlock();
    const int rc = ::fdatasync(fd_);
    const int error = errno;
    lock.lock();
    if (rc != 0) {
      ++failures_;
      // Sticky: after a failed fdatasync the kernel may drop the dirty
      // pages, so a later sync's success proves nothing about these records.
      // The store keeps every record from here on (nothing more counts as
      // durable in the file), and the next start restores the file from it.
      sync_failed_ = true;
      sync_error_ = Status::IoError("cannot sync the ledger " + path_ + ": " + std::strerror(error) +
                                    "; the store keeps its records until the broker restarts");
    } else {
      synced_seq_ = std::max(synced_seq_, target);
    }
    sync_running_ = false;
  }
}

Status Ledger::Flush(bool checkpoint) {
  auto lines = Write(checkpoint);
  if (!lines.ok()) return lines.status();
  if (::fdatasync(fd_) != 0) {
    const int error = errno;
    Undo();
    ++failures_;
    return Status::IoError("cannot write the ledger " + path_ + ": " + std::strerror(error));
  }
  Keep();
  std::lock_guard lock(sync_mu_);
  synced_seq_ = kept_seq_;
  return Status::Ok();
}

std::string VerifyReport::Summary() const {
  std::ostringstream out;
  if (ok) {
    out << "ledger OK: " << records << " records, " << checkpoints << " signed checkpoints";
    if (checkpoints) out << ", the last at record " << last_checkpoint_seq;
    if (last_checkpoint_seq < records) {
      out << "\nnote: records after " << last_checkpoint_seq
          << " are chained but not yet signed (a cut after the last checkpoint cannot be detected)";
    }
  } else {
    out << "ledger FAILED verification (" << problems.size() << " problem(s)):";
    for (const auto& p : problems) out << "\n  " << p;
  }
  return out.str();
}

VerifyReport VerifyLedger(const std::string& path, EVP_PKEY* public_key) {
  VerifyReport report;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    report.problems.push_back("cannot open " + path);
    return report;
  }
  wire::JsonCodec codec(wire::JsonCodec::Root::kLedgerRecord);
  std::string line, prev;
  uint64_t expected = 1;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    const std::string where = "line " + std::to_string(n) + ": ";
    if (in.eof()) {
      report.problems.push_back(where + "the file ends in the middle of a record (truncated)");
      break;
    }
    std::string json, hash;
    if (!SplitLine(line, &json, &hash)) {
      report.problems.push_back(where + "not a ledger record (no hash)");
      continue;
    }
    if (Sha256Hex(json) != hash) {
      report.problems.push_back(where + "record changed: its content does not match its hash");
    }
    auto binary = codec.ToBinary(json, path);
    if (!binary.ok()) {
      report.problems.push_back(where + "unreadable record: " + binary.status().message());
      prev = hash;
      ++expected;
      continue;
    }
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(binary->data());
    if (r->seq() != expected) {
      report.problems.push_back(where + "expected record " + std::to_string(expected) + ", found " +
                                std::to_string(r->seq()) + " (records removed, inserted or reordered)");
    } else if ((r->prev() ? r->prev()->str() : "") != prev) {
      report.problems.push_back(where + "chain broken: does not follow record " + std::to_string(expected - 1));
    }
    if (r->decision() == ledger::Decision::checkpoint) {
      ++report.checkpoints;
      const std::string message = CheckpointMessage(r->seq() - 1, r->prev() ? r->prev()->str() : "");
      const auto sig = FromHex(r->signature() ? r->signature()->str() : "");
      EVP_MD_CTX* ctx = EVP_MD_CTX_new();
      const bool good = ctx && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, public_key) == 1 &&
                        EVP_DigestVerify(ctx, sig.data(), sig.size(),
                                         reinterpret_cast<const unsigned char*>(message.data()),
                                         message.size()) == 1;
      EVP_MD_CTX_free(ctx);
      if (!good) {
        report.problems.push_back(where + "checkpoint signature does not verify with this public key");
      } else {
        report.last_checkpoint_seq = r->seq();
      }
    }
    ++report.records;
    prev = hash;
    expected = r->seq() + 1;
  }
  report.ok = report.problems.empty();
  return report;
}

StatusOr<std::vector<std::vector<uint8_t>>> ReadLedger(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open the ledger " + path);
  wire::JsonCodec codec(wire::JsonCodec::Root::kLedgerRecord);
  std::vector<std::vector<uint8_t>> out;
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    std::string json, hash;
    if (!SplitLine(line, &json, &hash)) {
      return Status::Corruption(path + ":" + std::to_string(n) + ": not a ledger record");
    }
    auto binary = codec.ToBinary(json, path);
    if (!binary.ok()) return Status::Corruption(path + ":" + std::to_string(n) + ": " + binary.status().message());
    out.push_back(std::move(*binary));
  }
  return out;
}

}  // namespace liaison::audit
