// liaison: the command-line agent. keygen, send and listen; see README.md.
#include <CLI/CLI.hpp>
#include <openssl/sha.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "liaison/version.h"
#include "liaison/agent.h"
#include "liaison/keys.h"
#include "liaison/outbox.h"
#include "liaison/wire.h"
#include "audit/ledger.h"
#include "audit/report.h"
#include "audit_commands.h"
#include "operator_commands.h"
#include "store_commands.h"
#include "policy_commands.h"
#include "signing_commands.h"
#include "diff_command.h"

namespace {

using liaison::Status;
namespace wire = liaison::wire;

// Exit codes, documented in README.md.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;        // broker unreachable, timeout, I/O error
constexpr int kExitUsage = 2;          // bad arguments, config or input file
constexpr int kExitNotReached = 3;     // accepted, but some recipient was not reached
constexpr int kExitRejected = 4;       // the broker rejected the message
constexpr int kExitQueued = 5;         // kept in the outbox: the broker did not answer yet

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

// The agent library's log lines (a move to another broker:
// event=broker_failover) go to stderr, so that stdout holds only messages
// and receipts.
void AgentLogsToStderr() {
  auto logger = spdlog::stderr_color_mt("liaison-agent");
  logger->set_pattern("liaison: %v");
  spdlog::set_default_logger(std::move(logger));
}

int Fail(const std::string& what, int code) {
  std::cerr << "liaison: " << what << "\n";
  return code;
}

liaison::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Parses "ID" or "kind:KIND[@REGION]".
liaison::StatusOr<std::unique_ptr<wire::RecipientT>> ParseAddress(const std::string& text) {
  auto r = std::make_unique<wire::RecipientT>();
  if (text.rfind("kind:", 0) == 0) {
    std::string rest = text.substr(5);
    auto at = rest.find('@');
    r->kind = rest.substr(0, at);
    if (at != std::string::npos) r->region = rest.substr(at + 1);
    if (r->kind.empty() || (at != std::string::npos && r->region.empty())) {
      return Status::InvalidArgument("bad address '" + text + "': use ID or kind:KIND[@REGION]");
    }
  } else {
    if (text.empty() || text.find_first_of(":@ ") != std::string::npos) {
      return Status::InvalidArgument("bad address '" + text + "': use ID or kind:KIND[@REGION]");
    }
    r->agency = text;
  }
  return r;
}

int Keygen(const std::string& out, const std::string& name) {
  auto keys = liaison::GenerateCurveKeyPair();
  if (!keys.ok()) return Fail(keys.status().message(), kExitFailure);
  if (auto st = liaison::WriteCurveKeyPair(out, name, *keys); !st.ok()) {
    return Fail(st.message(), kExitFailure);
  }
  std::cout << "wrote " << (std::filesystem::path(out) / (name + ".key")).string()
            << " (secret, mode 0600) and " << (std::filesystem::path(out) / (name + ".pub")).string()
            << "\npublic key: " << keys->public_z85 << "\n";
  return kExitOk;
}

// Prints the receipt as JSON; the exit code says whether every recipient was reached.
int PrintReceipt(const liaison::ReceiptBuffer& receipt, const wire::JsonCodec& codec) {
  auto text = codec.ToJson(receipt.bytes(), /*pretty=*/true);
  if (!text.ok()) return Fail(text.status().message(), kExitFailure);
  std::cout << *text << "\n";
  if (receipt->code() == wire::Code::unavailable || receipt->code() == wire::Code::busy) {
    return kExitFailure;  // resend later: same id
  }
  if (receipt->code() != wire::Code::ok) return kExitRejected;
  if (receipt->recipients()) {
    for (const auto* r : *receipt->recipients()) {
      if (r->code() != wire::Code::forwarded && r->code() != wire::Code::stored &&
          r->code() != wire::Code::delivered) {
        return kExitNotReached;
      }
    }
  }
  return kExitOk;
}

int Report(const std::string& ledger, const std::string& period, const std::string& from,
           const std::string& format, const std::string& svg) {
  auto range = liaison::audit::Period(period, from);
  if (!range.ok()) return Fail(range.status().message(), kExitUsage);
  auto report = liaison::audit::BuildReport(ledger, range->first, range->second);
  if (!report.ok()) return Fail(report.status().message(), kExitUsage);
  if (format == "csv") {
    std::cout << liaison::audit::ToCsv(*report);
  } else if (format == "markdown") {
    std::cout << liaison::audit::ToMarkdown(*report);
  } else {
    return Fail("--format must be markdown or csv", kExitUsage);
  }
  if (!svg.empty()) {
    std::ofstream out(svg);
    out << liaison::audit::FlowsSvg(*report);
    if (!out) return Fail("cannot write " + svg, kExitFailure);
    std::cerr << "wrote " << svg << "\n";
  }
  return kExitOk;
}

int FlushOutbox(const std::string& config_path) {
  AgentLogsToStderr();
  auto options = liaison::LoadAgentConfig(config_path);
  if (!options.ok()) return Fail(options.status().message(), kExitUsage);
  if (options->outbox.empty()) return Fail(config_path + " names no outbox", kExitUsage);
  auto agent = liaison::Agent::Connect(*options);
  if (!agent.ok()) return Fail(agent.status().message(), kExitUsage);
  auto box = liaison::Outbox::Open(options->outbox, options->outbox_key_file);
  if (!box.ok()) return Fail(box.status().message(), kExitFailure);
  wire::JsonCodec codec(wire::JsonCodec::Root::kReceipt);
  int sent = 0;
  Status st = (*box)->Flush(**agent, [&](const liaison::ReceiptBuffer& r) {
    ++sent;
    if (auto text = codec.ToJson(r.bytes(), false); text.ok()) std::cout << *text << "\n";
  });
  auto waiting = (*box)->Size();
  std::cerr << "liaison: sent " << sent << " from the outbox; " << (waiting.ok() ? *waiting : -1)
            << " waiting\n";
  if (!st.ok()) return Fail(st.message(), kExitQueued);
  return kExitOk;
}

int Send(const std::string& config_path, const std::vector<std::string>& to,
         const std::string& file, const std::string& reply_to) {
  AgentLogsToStderr();
  auto options = liaison::LoadAgentConfig(config_path);
  if (!options.ok()) return Fail(options.status().message(), kExitUsage);
  options->role = wire::Role::sender;
  auto json = ReadFile(file);
  if (!json.ok()) return Fail(json.status().message(), kExitUsage);

  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(*json, file);
  if (!binary.ok()) return Fail(binary.status().message(), kExitUsage);

  // Fill in what the sender's tooling owns: id, creation time, addresses.
  std::unique_ptr<wire::EnvelopeT> envelope(wire::GetEnvelope(binary->data())->UnPack());
  if (envelope->id.empty()) envelope->id = wire::NewMessageId();
  if (!wire::IsValidMessageId(envelope->id)) {
    // The broker would refuse it too; say so before connecting.
    return Fail(file + ": id must match " + std::string(wire::kMessageIdFormat) +
                    " (an opaque token, never personal data); remove it to get a ULID",
                kExitUsage);
  }
  if (envelope->created_at.empty()) envelope->created_at = wire::NowRfc3339();
  if (!reply_to.empty()) {
    // A received message as `liaison listen` writes it.
    auto received_json = ReadFile(reply_to);
    if (!received_json.ok()) return Fail(received_json.status().message(), kExitUsage);
    auto received = codec.ToBinary(*received_json, reply_to);
    if (!received.ok()) return Fail(received.status().message(), kExitUsage);
    if (!to.empty()) envelope->to.clear();  // --to wins over the received message's sender
    if (Status st = liaison::DeriveFrom(*wire::GetEnvelope(received->data()), envelope.get()); !st.ok()) {
      return Fail(reply_to + ": " + st.message(), kExitUsage);
    }
  }
  if (!to.empty()) {
    envelope->to.clear();
    for (const auto& address : to) {
      auto r = ParseAddress(address);
      if (!r.ok()) return Fail(r.status().message(), kExitUsage);
      envelope->to.push_back(std::move(*r));
    }
  }
  flatbuffers::FlatBufferBuilder fbb(binary->size() + 256);
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, envelope.get()));

  auto agent = liaison::Agent::Connect(*options);
  if (!agent.ok()) return Fail(agent.status().message(), kExitUsage);
  std::span<const uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetSize());
  wire::JsonCodec receipt_codec(wire::JsonCodec::Root::kReceipt);
  std::optional<liaison::ReceiptBuffer> mine;
  if (!options->outbox.empty()) {
    // Kept on disk first: if the broker is down, the message waits in the
    // outbox and goes out (oldest first) with the next send or flush.
    auto box = liaison::Outbox::Open(options->outbox, options->outbox_key_file);
    if (!box.ok()) return Fail(box.status().message(), kExitFailure);
    if (auto st = (*box)->Add(bytes); !st.ok()) return Fail(st.message(), kExitFailure);
    Status st = (*box)->Flush(**agent, [&](const liaison::ReceiptBuffer& r) {
      if (r->message_id() && r->message_id()->str() == envelope->id) {
        // The root must point into our own copy (a moved vector keeps its buffer).
        std::vector<uint8_t> copy(r.bytes().begin(), r.bytes().end());
        const wire::Receipt* root = wire::VerifyReceipt(copy);
        mine.emplace(std::move(copy), root);
      } else if (auto text = receipt_codec.ToJson(r.bytes(), false); text.ok()) {
        std::cerr << "sent from the outbox: " << *text << "\n";
      }
    });
    if (!st.ok()) {
      auto waiting = (*box)->Size();
      std::cerr << "liaison: " << st.message() << "\nliaison: message " << envelope->id
                << " is kept in the outbox " << options->outbox << " ("
                << (waiting.ok() ? *waiting : 0)
                << " waiting); it is sent with the next `liaison send` or `liaison outbox flush`\n";
      return kExitQueued;
    }
    if (!mine) return Fail("the outbox did not return this message's receipt", kExitFailure);
  } else {
    auto receipt = (*agent)->Send(bytes);
    if (!receipt.ok()) return Fail(receipt.status().message(), kExitFailure);
    mine.emplace(std::move(*receipt));
  }
  return PrintReceipt(*mine, receipt_codec);
}

// One path segment that names `text` and nothing else: bytes outside
// [A-Za-z0-9._-], and a leading '.', as %XX, so that no sender or id can
// reach another folder, hide the file or make "." / "..".
std::string FileNameSegment(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isalnum(c) || c == '-' || c == '_' || (c == '.' && i > 0)) {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

// "<sender>+<id>.json": ids are unique per sender only, so the file is named
// by both ('+' is escaped inside either). A name too long for a file system
// (255 bytes) names the id by its SHA-256 instead.
std::string MessageFileName(const wire::Envelope& message) {
  const std::string sender = FileNameSegment(message.from() ? message.from()->string_view() : "");
  const std::string_view raw_id = message.id() ? message.id()->string_view() : "";
  std::string name = sender + "+" + FileNameSegment(raw_id) + ".json";
  if (name.size() > 255 || sender.size() > 128) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(raw_id.data()), raw_id.size(), digest);
    name = sender.substr(0, 128) + "+sha256-" + liaison::HexEncode(digest, sizeof digest) + ".json";
  }
  return name;
}

// An overdue NOTICE (docs/protocol.md, "Response deadlines") in words, for
// the person watching `liaison listen`; empty for any other notice. The
// broker's strings are shown with control characters replaced.
std::string OverdueText(const wire::Receipt& notice) {
  if (!notice.recipients() || notice.recipients()->size() != 1) return "";
  const wire::RecipientReceipt* r = notice.recipients()->Get(0);
  if (r->code() != wire::Code::overdue) return "";
  auto text = [](const flatbuffers::String* s) {
    std::string out = s ? s->str() : "";
    for (char& ch : out) {
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
    }
    return out;
  };
  const std::string reason = text(r->reason()), id = text(notice.message_id()), from = text(notice.from()),
                    to = text(r->recipient()), detail = text(notice.detail());
  if (reason == "no-response-in-time") {
    return "your referral " + id + " to " + to + " has had no response within its deadline (" + detail + ")";
  }
  if (reason == "response-reminder") {
    return "referral " + id + " from " + from + " is waiting for your response past its deadline (" + detail + ")";
  }
  if (reason == "escalation") {
    return "a referral from " + from + " to " + to + " has had no response within its deadline (" + detail + ")";
  }
  return "referral " + id + " from " + from + " to " + to + ": " + reason + " (" + detail + ")";
}

int Listen(const std::string& config_path, int count, const std::string& out_dir) {
  AgentLogsToStderr();
  auto options = liaison::LoadAgentConfig(config_path);
  if (!options.ok()) return Fail(options.status().message(), kExitUsage);
  options->role = wire::Role::receiver;
  if (!out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) return Fail("cannot create " + out_dir + ": " + ec.message(), kExitUsage);
  }
  auto agent = liaison::Agent::Connect(*options);
  if (!agent.ok()) return Fail(agent.status().message(), kExitUsage);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  int received = 0;
  auto handler = [&](const liaison::EnvelopeBuffer& message) -> Status {
    auto text = codec.ToJson(message.bytes(), /*pretty=*/!out_dir.empty());
    if (!text.ok()) return text.status();
    // The sender's restrictions (H3) are for the person handling the case
    // to read before using it: shown in words, on stderr like the overdue
    // notices (docs/policies.md section 9a).
    if (message->handling() == wire::Handling::H3) {
      const auto* restrictions = message->handling_restrictions();
      std::cerr << "restrictions (H3) on " << (message->from() ? message->from()->str() : "") << " "
                << (message->id() ? message->id()->str() : "") << ": "
                << (restrictions && restrictions->size() > 0 ? restrictions->str()
                                                              : "(the text was withheld by the policies; ask the sender)")
                << std::endl;
    }
    if (out_dir.empty()) {
      std::cout << *text << std::endl;
    } else {
      const auto path = std::filesystem::path(out_dir) / MessageFileName(*message.get());
      // A message is case data: owner-only, whatever the umask.
      if (auto st = liaison::MakeOwnerOnlyFile(path.string()); !st.ok()) return st;
      std::ofstream file(path, std::ios::trunc);
      file << *text << "\n";
      if (!file) return Status::IoError("cannot write " + path.string());
    }
    // A withdrawal handed on: whatever the outbox keeps of that case (the
    // sender's case, filed under the sender) is shredded.
    if (message->payload_type() == wire::Payload::ErasureRequest && !options->outbox.empty() && message->from() &&
        message->from()->size() > 0) {
      auto box = liaison::Outbox::Open(options->outbox, options->outbox_key_file);
      if (!box.ok()) return box.status();
      if (auto st = (*box)->ShredCase(message->from()->str(), message->case_ref() ? message->case_ref()->str() : "");
          !st.ok()) {
        return st;
      }
    }
    if (count > 0 && ++received >= count) g_stop = true;
    return Status::Ok();
  };
  // Notices about this agency's own messages (delivered / expired /
  // overdue) and overdue reminders go to stderr, one JSON line each (an
  // overdue one after a line in words), so that stdout holds only messages.
  wire::JsonCodec receipt_codec(wire::JsonCodec::Root::kReceipt);
  auto print_notices = [&] {
    while (auto notice = (*agent)->TakeNotice()) {
      if (const std::string overdue = OverdueText(*notice->get()); !overdue.empty()) {
        std::cerr << "overdue: " << overdue << std::endl;
      }
      if (auto text = receipt_codec.ToJson(notice->bytes(), false); text.ok()) {
        std::cerr << "notice: " << *text << std::endl;
      }
    }
  };
  while (!g_stop) {
    auto message = (*agent)->Receive(std::chrono::milliseconds(200));
    if (!message.ok()) return Fail(message.status().message(), kExitFailure);
    print_notices();
    if (!message->has_value()) continue;
    const liaison::EnvelopeBuffer& envelope = **message;
    if (Status st = handler(envelope); !st.ok()) {
      return Fail("cannot take a received message: " + st.message(), kExitFailure);
    }
    if (auto st = (*agent)->Ack(envelope->from() ? envelope->from()->string_view() : "",
                                envelope->id()->string_view());
        !st.ok()) {
      return Fail(st.message(), kExitFailure);
    }
  }
  print_notices();
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liaison: the command-line agent of the liaison broker"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return liaison::VersionText("liaison"); },
                       "print the version, the source it was built from and the library versions, and exit");

  std::string out, name, store_key;
  auto* keygen = app.add_subcommand(
      "keygen", "create a CURVE key pair (NAME.key, NAME.pub), or one of the broker's other keys");
  auto* out_opt = keygen->add_option("--out", out, "directory for the key files");
  auto* name_opt = keygen->add_option("--name", name, "key name, usually the agency id");
  auto* store_opt = keygen->add_option(
      "--store-key", store_key, "instead: write a new store key (AES-256) to this file");
  std::string ledger_key_dir;
  auto* ledger_opt = keygen->add_option(
      "--ledger-key", ledger_key_dir,
      "instead: write the ledger signing key pair (Ed25519) DIR/ledger-signing.{key,pub}");
  std::string token_file;
  auto* token_opt = keygen->add_option(
      "--token", token_file, "instead: write a new gateway bearer token (64 hex digits) to this file");
  std::string pseudonym_key_file, from_broker_key;
  auto* pseudonym_opt = keygen->add_option(
      "--pseudonym-key", pseudonym_key_file,
      "instead: write the broker's pseudonym key (keys every pseudonym) to this file");
  auto* from_broker_opt = keygen->add_option(
      "--from-broker-key", from_broker_key,
      "with --pseudonym-key: take the key from this broker CURVE secret key file, keeping the "
      "pseudonyms of a broker that derived them from its CURVE key");
  bool dpo_key = false;
  auto* dpo_opt = keygen->add_flag(
      "--dpo-key", dpo_key,
      "instead: write a DPO's policy signing key pair (Ed25519) OUT/NAME.dpo.{key,pub}; needs --out and --name");
  from_broker_opt->needs(pseudonym_opt);
  dpo_opt->needs(out_opt)->needs(name_opt);
  name_opt->needs(out_opt);
  store_opt->excludes(out_opt)->excludes(name_opt)->excludes(ledger_opt)->excludes(token_opt);
  token_opt->excludes(out_opt)->excludes(name_opt)->excludes(ledger_opt);
  ledger_opt->excludes(out_opt)->excludes(name_opt);
  pseudonym_opt->excludes(out_opt)->excludes(name_opt)->excludes(ledger_opt)->excludes(token_opt)->excludes(
      store_opt);

  std::string config, file;
  std::vector<std::string> to;
  auto* send = app.add_subcommand("send", "send a message (JSON) and print its receipt (JSON)");
  send->add_option("--config", config, "agent config file (YAML)")->required();
  send->add_option("--to", to, "recipient: ID or kind:KIND[@REGION]; repeatable");
  send->add_option("file", file, "the message as JSON (schemas/envelope.fbs)")->required();
  std::string reply_to;
  send->add_option("--reply-to", reply_to,
                   "a received message (JSON, as `liaison listen` writes it) that this one answers or passes "
                   "on: fills derived_from from its thread, an empty in_reply_to from its id and, without "
                   "--to, the recipient from its sender");

  int count = 0;
  std::string listen_out;
  auto* listen = app.add_subcommand("listen", "receive messages, print each as one JSON line");
  listen->add_option("--config", config, "agent config file (YAML)")->required();
  listen->add_option("--count", count, "stop after N messages (default: until interrupted)");
  listen->add_option("--out", listen_out,
                     "write each message to DIR/<sender>+<id>.json instead (unsafe characters as %XX)");

  auto* outbox = app.add_subcommand("outbox", "the agent's outbox");
  outbox->require_subcommand(1);
  std::string outbox_config;
  auto* flush = outbox->add_subcommand("flush", "send the messages waiting in the outbox");
  flush->add_option("--config", outbox_config, "agent config file (YAML) naming the outbox")->required();

  auto* audit = app.add_subcommand("audit", "verify and query the disclosure ledger");
  audit->require_subcommand(1);
  std::string ledger_path, public_key;
  auto* verify = audit->add_subcommand("verify", "check the ledger's hash chain and signatures");
  verify->add_option("--ledger", ledger_path, "ledger file")->required();
  verify->add_option("--public-key", public_key, "ledger-signing.pub")->required();
  liaison::cli::AuditQuery query_options;
  auto* query = audit->add_subcommand("query", "list ledger records (never values, only names)");
  query->add_option("--ledger", query_options.ledger, "ledger file")->required();
  query->add_option("--case", query_options.case_ref, "a case reference (with --sender and --pseudonym-key)");
  query->add_option("--sender", query_options.sender, "the agency whose case reference it is / sender");
  query->add_option("--pseudonym-key", query_options.pseudonym_key,
                    "the broker's pseudonym key file (keys case pseudonyms)");
  query->add_option("--agency", query_options.agency, "records where this agency sent or received");
  query->add_option("--rule", query_options.rule, "records decided by this rule id");
  query->add_option("--decision", query_options.decision,
                    "released, denied, delivered, expired, erased, break_glass, purged or requeued");
  query->add_option("--since", query_options.since, "from this time (RFC 3339, inclusive)");
  query->add_option("--until", query_options.until, "before this time (RFC 3339)");
  query->add_option("--format", query_options.format, "table (default), json or csv");
  query->add_option("--thread", query_options.thread,
                    "a case thread's whole path, in order: the thread id of any of its records (`thread` in "
                    "--format json); its messages' deliveries too");
  query->add_option("--policy-history", query_options.policy_history,
                    "instead: every version of AGENCY's policy file that went live (hash, signer, time), its "
                    "DPO key pins and refused reloads; `vocabulary` for the shared file");

  std::string report_ledger, report_period = "month", report_from, report_format = "markdown", report_svg;
  auto* report = app.add_subcommand("report", "M&E report from the ledger (counts below 5 shown as <5)");
  report->add_option("--ledger", report_ledger, "ledger file")->required();
  report->add_option("--period", report_period, "week, month (default) or quarter");
  report->add_option("--from", report_from, "first day (YYYY-MM-DD); default: the last complete period");
  report->add_option("--format", report_format, "markdown (default) or csv");
  report->add_option("--svg", report_svg, "also write a chart of the flows between kinds to this file");

  auto* policy = app.add_subcommand("policy", "check, explain and test policies (for DPOs)");
  policy->require_subcommand(1);
  std::string policy_dir, from, to_agency, message, explain_pseudonym_key;
  auto* check = policy->add_subcommand("check", "validate a policies directory");
  check->add_option("dir", policy_dir, "policies directory")->required();
  auto* explain = policy->add_subcommand(
      "explain", "show what an agency would receive of a message, and why");
  explain->add_option("--policies", policy_dir, "policies directory")->required();
  explain->add_option("--from", from, "sending agency id")->required();
  explain->add_option("--to", to_agency, "receiving agency id")->required();
  explain->add_option("--pseudonym-key", explain_pseudonym_key,
                      "the broker's pseudonym key file, for real pseudonyms");
  bool explain_json = false;
  explain->add_flag("--json", explain_json,
                    "print the explanation as JSON (schemas/explain.fbs), the recipient's copy included");
  explain->add_option("file", message, "the message as JSON")->required();
  auto* test = policy->add_subcommand("test", "run the test cases in DIR/tests/*.yaml");
  test->add_option("dir", policy_dir, "policies directory")->required();
  std::string sign_file, sign_key;
  auto* sign = policy->add_subcommand("sign", "sign a policy file as its DPO (writes FILE.sig beside it)");
  sign->add_option("file", sign_file, "the policy file (agency file, vocabulary, rotation statement)")->required();
  sign->add_option("--key", sign_key, "the DPO's key (NAME.dpo.key)")->required();
  std::string pins_file;
  uint64_t quorum = 2;
  auto* verify_policies = policy->add_subcommand(
      "verify", "check every file's DPO signature as the broker would (exit 1 if one would be refused)");
  verify_policies->add_option("dir", policy_dir, "policies directory")->required();
  verify_policies->add_option("--pins", pins_file,
                              "the broker's pinned keys (policy_signing.pins_file); default: the keys in "
                              "DIR/dpo-keys, as at onboarding");
  verify_policies->add_option("--quorum", quorum, "agency DPO signatures the vocabulary needs (default 2)");
  liaison::cli::DiffOptions diff_options;
  std::string install_staged, install_live, install_pins;
  uint64_t install_quorum = 2;
  auto* install = policy->add_subcommand(
      "install", "check STAGED as the broker would load it, then make it LIVE in one atomic step "
                 "(LIVE is untouched if anything fails)");
  install->add_option("staged", install_staged, "the reviewed copy of the policies folder")->required();
  install->add_option("live", install_live, "the broker's policies folder (policies_dir)")->required();
  install->add_option("--pins", install_pins,
                      "also check DPO signatures against the broker's pins file (policy_signing.pins_file)");
  install->add_option("--quorum", install_quorum, "agency DPO signatures the vocabulary needs (default 2)");
  auto* diff = policy->add_subcommand(
      "diff", "preview a change: every flow's decision and fields before and after (exit 3 if anything widens)");
  diff->add_option("old", diff_options.before_dir, "the policies directory live now")->required();
  diff->add_option("new", diff_options.after_dir, "the changed policies directory")->required();
  diff->add_option("--ledger", diff_options.ledger, "also the flows seen in this ledger (metadata only)");
  diff->add_option("--since", diff_options.since, "ledger window: 30d (default), 12h, a date or RFC 3339 time");
  diff->add_option("--messages", diff_options.messages_dir, "sample messages (default NEW/tests/messages)");
  diff->add_option("--html", diff_options.html, "also write one self-contained HTML page for sign-off");
  diff->add_flag("--json", diff_options.json, "print JSON instead of text");
  std::string rotate_agency, rotate_old, rotate_new;
  auto* rotate = policy->add_subcommand(
      "rotate-key", "as the DPO: move AGENCY to a new DPO key (a statement signed by the old key)");
  rotate->add_option("--policies", policy_dir, "policies directory")->required();
  rotate->add_option("--agency", rotate_agency, "agency id")->required();
  rotate->add_option("--old-key", rotate_old, "the current DPO key (NAME.dpo.key)")->required();
  rotate->add_option("--new-key", rotate_new, "the new DPO public key (NAME.dpo.pub)")->required();

  liaison::cli::BrokerTarget broker_target;
  bool operator_json = false;
  auto add_target = [&](CLI::App* command) {
    command->add_option("--config", broker_target.config, "the broker's config (for admin.socket)")
        ->capture_default_str();
    command->add_option("--socket", broker_target.socket, "the broker's admin socket (instead of --config)");
    command->add_flag("--json", operator_json, "print JSON");
  };
  auto* status = app.add_subcommand(
      "status", "the running broker: role, uptime, policy version, agencies, queues, ledger (its user only)");
  add_target(status);
  std::string queues_recipient;
  int queues_limit = 100;
  auto* queues = app.add_subcommand(
      "queues", "queued and set-aside messages per recipient: ids, senders, types, ages; never contents");
  add_target(queues);
  queues->add_option("--recipient", queues_recipient, "list this recipient's messages");
  queues->add_option("--limit", queues_limit, "at most this many (1..10000)")->capture_default_str();
  std::string purge_set_aside, requeue_set_aside;
  auto* purge_option = queues->add_option(
      "--purge-set-aside", purge_set_aside,
      "delete these set-aside messages of --recipient, undelivered: SEQ[,SEQ...] or all (each in the ledger)");
  queues->add_option("--requeue-set-aside", requeue_set_aside,
                     "put these set-aside messages of --recipient back in its queue for delivery: SEQ[,SEQ...] "
                     "or all (each in the ledger)")
      ->excludes(purge_option);
  std::string backup_config = "/etc/liaison/broker.yaml", backup_out;
  auto* backup = app.add_subcommand(
      "backup", "copy the store (SQLite online backup) and the ledger into a new folder, while the broker runs");
  backup->add_option("--config", backup_config, "the broker's config")->capture_default_str();
  backup->add_option("--out", backup_out, "new folder for the backup")->required();
  std::string restore_from;
  auto* restore = app.add_subcommand(
      "restore", "put a backup in place of the store and ledger of a stopped broker (never overwrites)");
  restore->add_option("--config", backup_config, "the broker's config")->capture_default_str();
  restore->add_option("--from", restore_from, "the backup folder")->required();

  liaison::cli::StoreMigrateOptions migrate_options;
  auto* store_command = app.add_subcommand("store", "operator tools for the broker's store");
  store_command->require_subcommand(1);
  auto* migrate = store_command->add_subcommand(
      "migrate", "copy a stopped broker's SQLite store into an empty PostgreSQL database, in one transaction");
  migrate->add_option("--from", migrate_options.from, "the backend copied from: sqlite")->capture_default_str();
  migrate->add_option("--to", migrate_options.to, "the backend copied to: postgresql")->capture_default_str();
  auto* migrate_config = migrate->add_option(
      "--config", migrate_options.config, "the SQLite deployment's broker.yaml (store.path, store.key_file)");
  migrate->add_option("--sqlite", migrate_options.sqlite_path, "instead: the SQLite store file")
      ->excludes(migrate_config);
  migrate->add_option("--store-key", migrate_options.store_key_file, "instead: the store key file")
      ->excludes(migrate_config);
  migrate->add_option("--url", migrate_options.url,
                      "the empty PostgreSQL database (libpq URL; several hosts allowed)")
      ->required();
  migrate->add_option("--password-file", migrate_options.password_file,
                      "the database password, first line (mode 0600)");

  CLI11_PARSE(app, argc, argv);
  if (migrate->parsed()) return liaison::cli::StoreMigrateCommand(migrate_options);
  if (status->parsed()) return liaison::cli::StatusCommand(broker_target, operator_json);
  if (queues->parsed()) {
    if (!purge_set_aside.empty() || !requeue_set_aside.empty()) {
      const bool requeue = !requeue_set_aside.empty();
      return liaison::cli::SetAsideCommand(broker_target, queues_recipient, requeue,
                                           requeue ? requeue_set_aside : purge_set_aside, operator_json);
    }
    return liaison::cli::QueuesCommand(broker_target, queues_recipient, queues_limit, operator_json);
  }
  if (backup->parsed()) return liaison::cli::BackupCommand(backup_config, backup_out);
  if (restore->parsed()) return liaison::cli::RestoreCommand(backup_config, restore_from);
  if (flush->parsed()) return FlushOutbox(outbox_config);
  if (report->parsed()) return Report(report_ledger, report_period, report_from, report_format, report_svg);
  if (verify->parsed()) return liaison::cli::AuditVerify(ledger_path, public_key);
  if (query->parsed()) return liaison::cli::AuditQueryCommand(query_options);
  if (check->parsed()) return liaison::cli::PolicyCheck(policy_dir);
  if (explain->parsed()) {
    return liaison::cli::PolicyExplain(policy_dir, from, to_agency, message, explain_pseudonym_key,
                                       explain_json);
  }
  if (test->parsed()) return liaison::cli::PolicyTest(policy_dir);
  if (diff->parsed()) return liaison::cli::PolicyDiffCommand(diff_options);
  if (sign->parsed()) return liaison::cli::PolicySign(sign_file, sign_key);
  if (install->parsed()) {
    return liaison::cli::PolicyInstall(install_staged, install_live, install_pins, install_quorum);
  }
  if (verify_policies->parsed()) return liaison::cli::PolicyVerify(policy_dir, pins_file, quorum);
  if (rotate->parsed()) return liaison::cli::PolicyRotateKey(policy_dir, rotate_agency, rotate_old, rotate_new);
  if (keygen->parsed()) {
    if (!store_key.empty()) {
      Status st = liaison::WriteStoreKey(store_key);
      if (!st.ok()) return Fail(st.message(), kExitFailure);
      std::cout << "wrote " << store_key << " (store key, mode 0600)\n";
      return kExitOk;
    }
    if (!pseudonym_key_file.empty()) {
      Status st = liaison::WritePseudonymKeyFile(pseudonym_key_file, from_broker_key);
      if (!st.ok()) return Fail(st.message(), kExitFailure);
      std::cout << "wrote " << pseudonym_key_file << " (pseudonym key, mode 0600"
                << (from_broker_key.empty() ? "" : ", from the broker's CURVE key: same pseudonyms as before")
                << "): back it up; a new one changes every pseudonym\n";
      return kExitOk;
    }
    if (!token_file.empty()) {
      auto token = liaison::WriteNewToken(token_file);
      if (!token.ok()) return Fail(token.status().message(), kExitFailure);
      std::cout << "wrote " << token_file
                << " (gateway bearer token, mode 0600): give it to the agency's system over a "
                   "channel you trust\n";
      return kExitOk;
    }
    if (!ledger_key_dir.empty()) {
      Status st = liaison::audit::WriteSigningKey(ledger_key_dir, "ledger-signing");
      if (!st.ok()) return Fail(st.message(), kExitFailure);
      std::cout << "wrote " << ledger_key_dir << "/ledger-signing.key (secret, mode 0600) and "
                << ledger_key_dir << "/ledger-signing.pub (for `liaison audit verify`)\n";
      return kExitOk;
    }
    if (dpo_key) return liaison::cli::DpoKeygen(out, name);
    if (out.empty() || name.empty()) {
      return Fail("keygen needs --out and --name, or --store-key, --pseudonym-key, --ledger-key or --token",
                  kExitUsage);
    }
    return Keygen(out, name);
  }
  if (send->parsed()) return Send(config, to, file, reply_to);
  if (listen->parsed()) return Listen(config, count, listen_out);
  return kExitUsage;
}
