#include "core/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include "admin/metrics.h"
#include "admin/operator_server.h"
#include "audit/ledger.h"
#include "liaison/logging.h"
#include "policy/policy_set.h"

namespace liaison::broker {
namespace {

// A ledger record about the queued copy that `label` labels: its decision,
// message, case and type (the rest is the caller's).
audit::Entry CopyEntry(ledger::Decision decision, const std::string& message_id, const std::string& label) {
  audit::Entry entry;
  entry.decision = decision;
  entry.message_id = message_id;
  store::CopyLabel parts = store::CopyLabel::Parse(label);
  entry.case_pseudonym = std::move(parts.case_pseudonym);
  entry.type = std::move(parts.type);
  return entry;
}

// The thread reference that `env`'s derived_from names, if it is one: only
// references are looked up (a reference reaches its holder only after its
// batch committed, so the store has it).
std::optional<std::string_view> DerivedThreadRef(const wire::Envelope* env) {
  if (env == nullptr || env->derived_from() == nullptr) return std::nullopt;
  const std::string_view ref = env->derived_from()->string_view();
  if (!IsThreadRef(ref)) return std::nullopt;
  return ref;
}

}  // namespace

Pipeline::Pipeline(const BrokerConfig& config, std::unique_ptr<store::Store> store,
                   std::unique_ptr<store::Store> reader, std::unique_ptr<audit::Ledger> ledger, Metrics* metrics,
                   BrokerStats* stats, Link* link, PolicySource policies)
    : config_(config),
      dispatcher_(config_.limits),
      store_(std::move(store)),
      reader_(std::move(reader)),
      ledger_(std::move(ledger)),
      metrics_(metrics),
      stats_(*stats),
      link_(*link),
      policies_(std::move(policies)),
      windows_(config_.store.delivery_window, static_cast<int64_t>(config_.store.redelivery_timeout_ms)) {}

struct Pipeline::SetAsideCall {
  SetAsideRequest request;
  std::promise<StatusOr<SetAsideOutcome>> done;
};

Pipeline::~Pipeline() = default;

Status Pipeline::Start() {
  auto committer = Committer::Start(store_.get());
  if (!committer.ok()) return committer.status();
  committer_ = std::move(*committer);
  auto depths = reader_->QueueDepths();
  if (!depths.ok()) return depths.status();
  queue_depth_ = std::move(*depths);
  int64_t queued = 0;
  for (const auto& [agency, n] : queue_depth_) queued += n;
  spdlog::info("event=store_open queued={} recipients_with_queue={}", queued, queue_depth_.size());
  // The receipts the store holds: for up to a second now, the rest a page
  // at a time at each tick, so that a large store neither delays serving
  // (nor a standby's activation) nor stalls the thread for long. Until the
  // last page is in, every id is looked up in the store, as without it.
  receipt_scan_ = store::ReceiptKeyCursor{};
  LoadReceiptKeys(std::chrono::milliseconds(1000));
  return Status::Ok();
}

void Pipeline::LoadReceiptKeys(std::chrono::milliseconds budget) {
  constexpr size_t kPage = 2000;
  const auto until = std::chrono::steady_clock::now() + budget;
  while (receipt_scan_) {
    auto read = reader_->ScanReceiptKeys(&*receipt_scan_, kPage,
                                         [this](std::string_view sender, std::string_view id, int64_t purge_after) {
                                           receipt_filter_.Add(sender, id, purge_after);
                                         });
    if (!read.ok()) {
      // Keys of a failed page are kept (an extra key is only a store read);
      // the page is read again at the next tick.
      spdlog::warn("event=receipt_filter_incomplete error=\"{}\" action=ids_looked_up_in_store_until_loaded",
                   read.status().message());
      return;
    }
    if (*read < kPage) {
      receipt_scan_.reset();
      receipt_filter_loaded_ = true;
      spdlog::info("event=receipt_filter_loaded receipts={} bytes={}", receipt_filter_.keys(),
                   receipt_filter_.bytes());
      return;
    }
    if (std::chrono::steady_clock::now() >= until) return;
  }
}

int Pipeline::commit_fd() const { return committer_->event_fd(); }

void Pipeline::OnCommitReady() {
  if (auto result = committer_->TakeResult()) OnCommitted(std::move(*result));
}

bool Pipeline::accepting() const {
  // While a commit runs, the next batch forms; once it is full, the socket
  // waits (senders feel the back-pressure, memory stays bounded).
  return !(committer_->busy() && forming_messages_ >= config_.store.max_batch);
}

void Pipeline::ReceiverConnected(const std::string& agency) {
  // After this batch is committed.
  windows_.Reset(agency);
  touched_.insert(agency);
  notice_for_.insert(agency);
}

void Pipeline::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    for (const auto& e : events_) ledger_->Add(e);
    events_.clear();
    stopped_ = true;
    for (auto& call : set_aside_calls_) {
      call->done.set_value(Status::Unavailable("the broker is stopping; nothing was done"));
    }
    set_aside_calls_.clear();
  }
  AdmitArrivals();
  Drain(/*checkpoint=*/true);
  if (auto synced = ledger_->Sync(); !synced.ok()) {
    spdlog::error("event=ledger_write_failed error=\"{}\"", synced.status().message());
  }
}

void Pipeline::RecordEvents(std::vector<audit::Entry> events) {
  std::lock_guard<std::mutex> lock(events_mu_);
  for (auto& e : events) events_.push_back(std::move(e));
}


StatusOr<SetAsideOutcome> Pipeline::ActOnSetAside(const SetAsideRequest& request,
                                                 std::chrono::milliseconds timeout) {
  auto call = std::make_shared<SetAsideCall>();
  call->request = request;
  auto answer = call->done.get_future();
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    if (stopped_) return Status::Unavailable("the broker is stopping; nothing was done");
    set_aside_calls_.push_back(call);
  }
  if (answer.wait_for(timeout) == std::future_status::ready) return answer.get();
  {
    // Not taken yet: withdrawn, so that it never happens unannounced later.
    std::lock_guard<std::mutex> lock(events_mu_);
    if (std::erase(set_aside_calls_, call) > 0) {
      return Status::Unavailable("the broker's core did not take the request in time; nothing was done");
    }
  }
  // Taken: its commit is under way and ends (or fails) soon.
  if (answer.wait_for(timeout) == std::future_status::ready) return answer.get();
  return Status::Unavailable("the broker's core did not finish in time; see `liaison queues --recipient " +
                             request.recipient + "` for what was done");
}

void Pipeline::HandleSetAsideCalls() {
  std::vector<std::shared_ptr<SetAsideCall>> calls;
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    calls.swap(set_aside_calls_);
  }
  for (auto& call : calls) call->done.set_value(ApplySetAside(call->request));
}

StatusOr<SetAsideOutcome> Pipeline::ApplySetAside(const SetAsideRequest& request) {
  // A barrier: the copies set aside so far are committed, so the reader
  // sees every one of them.
  Drain();
  auto copies = reader_->SetAside(request.recipient);
  if (!copies.ok()) return copies.status();
  SetAsideOutcome outcome;
  std::vector<store::ExpiredMessage> chosen;
  for (int64_t seq : request.seqs) {
    auto it = std::find_if(copies->begin(), copies->end(), [&](const auto& c) { return c.seq == seq; });
    if (it == copies->end()) {
      outcome.not_set_aside.push_back(seq);
    } else {
      chosen.push_back(*it);
    }
  }
  if (request.seqs.empty()) chosen = *copies;
  if (chosen.empty()) return outcome;
  const auto set = policies();
  for (const store::ExpiredMessage& c : chosen) {
    (request.requeue ? forming_.requeued : forming_.purged).push_back(c.seq);
    audit::Entry entry =
        CopyEntry(request.requeue ? ledger::Decision::requeued : ledger::Decision::purged, c.message_id, c.label);
    entry.sender = c.sender;
    entry.recipient = c.recipient;
    entry.reason = "operator";
    entry.policy_version = set->version();
    ledger_->Add(entry);
    outcome.done.push_back({c.seq, c.sender, c.message_id, entry.type});
  }
  depths_stale_ = true;  // re-read after the commit
  Drain();
  // The change and its records commit together or not at all.
  auto left = reader_->SetAside(request.recipient);
  if (!left.ok()) return left.status();
  for (const store::ExpiredMessage& c : *left) {
    if (std::any_of(chosen.begin(), chosen.end(), [&](const auto& x) { return x.seq == c.seq; })) {
      return Status::Unavailable("the store did not commit the change (see commit_failed in the broker's log); "
                                 "nothing was done");
    }
  }
  const int64_t first = chosen.front().seq;
  if (request.requeue) {
    // The queue's read had passed them: it starts again from the beginning.
    if (windows_.Cursor(request.recipient) >= first) windows_.Reset(request.recipient);
    // Back in the queue, and not among the fresh copies: read the store.
    windows_.Forget(request.recipient);
    touched_.insert(request.recipient);
  }
  if (request.requeue) {
    spdlog::warn("event=set_aside_requeued recipient={} messages={} reason=operator", request.recipient,
                 chosen.size());
  } else {
    spdlog::warn("event=set_aside_purged recipient={} messages={} reason=operator", request.recipient,
                 chosen.size());
  }
  return outcome;
}

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr int64_t kDayMs = 24LL * 3600 * 1000;

}  // namespace

bool Pipeline::WithinLimits(const std::string& agency) {
  const Limits& limits = config_.limits;
  if (limits.max_in_flight_per_agency > 0 &&
      batch_in_flight_[agency] >= limits.max_in_flight_per_agency) {
    return false;
  }
  if (limits.rate_per_agency == 0) return true;
  return buckets_[agency].Take(static_cast<double>(limits.burst_per_agency),
                               static_cast<double>(limits.rate_per_agency),
                               std::chrono::steady_clock::now());
}

void Pipeline::HandleSend(std::shared_ptr<const policy::PolicySet> policies, const Agency& sender,
                          const std::string& routing_id, std::span<const uint8_t> body) {
  stats_.messages_in++;
  ++batch_messages_;
  ++forming_messages_;
  // Cheapest check first: a flood is answered before any parsing, and the
  // other agencies' messages in the same batch are not held up by it.
  if (!WithinLimits(sender.id)) {
    stats_.busy++;
    if (stats_.busy % 1000 == 1) {
      spdlog::warn("event=agency_over_limit agency={} busy_total={}", sender.id, stats_.busy.load());
    }
    // Echo the id so that the sender can match it (verified; never logged).
    std::vector<uint8_t> storage;
    // Bounded: VerifyEnvelope refuses a buffer that shares its way past
    // wire::kMaxExpansion times its size.
    const wire::Envelope* env = wire::VerifyEnvelope(wire::Aligned(body, storage));
    const std::string id = env && env->id() ? env->id()->str() : std::string();
    auto receipt = BuildReceipt(id, wire::Code::busy,
                                "over this agency's rate or in-flight limit; resend later with the same id",
                                sender.id, {}, policies->version());
    link_.SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    return;
  }
  ++batch_in_flight_[sender.id];
  // Admitted with the rest of the drain (AdmitArrivals): one dedupe lookup
  // for all of them. A vector's storage is aligned for any FlatBuffer.
  arrivals_.push_back({std::move(policies), &sender, routing_id, std::vector<uint8_t>(body.begin(), body.end())});
}

void Pipeline::AdmitArrivals() {
  if (arrivals_.empty()) return;
  std::vector<Arrival> arrivals = std::move(arrivals_);
  arrivals_.clear();
  // Which of the drain's messages were answered before (resends): one
  // store call for all of those not in a batch still committing.
  std::vector<std::pair<std::string, std::string>> keys;
  std::vector<size_t> key_of(arrivals.size(), SIZE_MAX);
  // And the threads they derive from (a reply names its thread): one store
  // call too, not one per reply on this thread.
  std::vector<std::string> refs;
  std::vector<size_t> ref_of(arrivals.size(), SIZE_MAX);
  for (size_t i = 0; i < arrivals.size(); ++i) {
    Arrival& a = arrivals[i];
    // The one verification of the message: admission reads this check.
    if (a.body.size() <= config_.limits.max_message_bytes) {
      a.check = wire::VerifyEnvelopeWithin(a.body, a.body.size() * wire::kMaxExpansion);
    }
    const wire::Envelope* env = a.check.envelope;
    if (env == nullptr) continue;
    if (const auto ref = DerivedThreadRef(env)) {
      ref_of[i] = refs.size();
      refs.emplace_back(*ref);
    }
    if (env->id() == nullptr || env->id()->size() == 0) continue;
    // An id that admission refuses has no receipt, and must not reach the
    // store: a database refusing its bytes (not UTF-8, a NUL) would fail
    // the lookup of every message of the drain, every agency's.
    if (!wire::IsValidMessageId(env->id()->string_view())) continue;
    if (uncommitted_receipts_.count(ReceiptKey(a.sender->id, env->id()->str()))) continue;
    // A key the filter rules out has no receipt (Admit takes key_of's
    // SIZE_MAX as "none stored").
    if (SurelyNew(a.sender->id, env->id()->string_view())) continue;
    key_of[i] = keys.size();
    keys.emplace_back(a.sender->id, env->id()->str());
  }
  stats_.receipt_lookups += keys.size();
  StatusOr<std::vector<std::optional<std::vector<uint8_t>>>> found =
      keys.empty() ? std::vector<std::optional<std::vector<uint8_t>>>() : reader_->FindReceipts(keys);
  StatusOr<std::vector<std::optional<store::Thread>>> threads =
      refs.empty() ? std::vector<std::optional<store::Thread>>() : reader_->FindThreads(refs);
  const uint64_t drains = drains_;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    // One failed call must not fail them all: each is looked up alone.
    if (ref_of[i] != SIZE_MAX && threads.ok() && drains_ == drains) {
      arrivals[i].thread = std::move((*threads)[ref_of[i]]);
    }
    // After a barrier (an erasure drains the batches before it), what this
    // drain admitted is committed and no longer among the uncommitted
    // receipts, and the lookup above predates it: look again.
    if (drains_ != drains) {
      Admit(arrivals[i], std::nullopt);
    } else if (key_of[i] == SIZE_MAX) {
      Admit(arrivals[i], std::optional<std::vector<uint8_t>>());
    } else if (!found.ok()) {
      // One failed call must not fail them all: each is looked up alone.
      Admit(arrivals[i], std::nullopt);
    } else {
      Admit(arrivals[i], std::move((*found)[key_of[i]]));
    }
  }
}

void Pipeline::Admit(const Arrival& arrival, std::optional<StatusOr<std::optional<std::vector<uint8_t>>>> looked_up) {
  const policy::PolicySet& policies = *arrival.policies;
  const Agency& sender = *arrival.sender;
  const std::string& routing_id = arrival.routing_id;
  const wire::Envelope* peek = arrival.check.envelope;
  std::span<const uint8_t> bytes(arrival.body);
  auto reply = [&](const std::string& id, const flatbuffers::DetachedBuffer& receipt) {
    replies_.push_back({routing_id, std::vector<uint8_t>(receipt.data(), receipt.data() + receipt.size()), id,
                        sender.id});
  };
  auto unavailable = [&](const std::string& id, const Status& st) {
    spdlog::error("event=store_failed agency={} id={} error=\"{}\"", sender.id,
                  wire::LoggableMessageId(id), st.message());
    reply(id, BuildReceipt(id, wire::Code::unavailable,
                           "the broker could not store the message; resend it later with the same id",
                           sender.id, {}, policies.version()));
  };

  // A resend of a message already handled gets the original receipt.
  const std::string peek_id = peek && peek->id() ? peek->id()->str() : std::string();
  if (!peek_id.empty()) {
    // This batch's and the committing batch's receipts first: the store
    // reader sees only what is committed.
    std::optional<std::vector<uint8_t>> original;
    if (auto it = uncommitted_receipts_.find(ReceiptKey(sender.id, peek_id)); it != uncommitted_receipts_.end()) {
      original = it->second;
    } else if (!looked_up && SurelyNew(sender.id, peek_id)) {
      // Never given a receipt: new.
    } else {
      if (!looked_up) stats_.receipt_lookups++;
      StatusOr<std::optional<std::vector<uint8_t>>> found =
          looked_up ? std::move(*looked_up) : reader_->FindReceipt(sender.id, peek_id);
      if (!found.ok()) return unavailable(peek_id, found.status());
      original = std::move(*found);
    }
    if (original) {
      stats_.duplicates++;
      spdlog::info("event=duplicate agency={} id={}", sender.id, wire::LoggableMessageId(peek_id));
      replies_.push_back({routing_id, std::move(*original), peek_id, sender.id});
      return;
    }
  }

  // A withdrawal also goes to every agency that received data of the case.
  std::vector<std::string> disclosed;
  const bool erasure = peek && peek->payload_type() == wire::Payload::ErasureRequest &&
                       peek->case_ref() && peek->case_ref()->size() > 0;
  if (erasure) {
    // A barrier (erasures are rare): everything before it is committed, so
    // the reader sees every disclosure and every queued copy of the case.
    Drain();
    auto to = reader_->Disclosures(sender.id, peek->case_ref()->str());
    if (!to.ok()) return unavailable(peek_id, to.status());
    disclosed = std::move(*to);
  }

  // The thread a derived message names, if the sender holds it.
  std::optional<store::Thread> parent;
  if (const auto ref = DerivedThreadRef(peek)) {
    auto found = arrival.thread ? *arrival.thread : reader_->FindThread(std::string(*ref));
    if (!found.ok()) return unavailable(peek_id, found.status());
    if (*found && (*found)->holder == sender.id) parent = std::move(*found);
  }

  Admission admission =
      dispatcher_.Admit(policies, sender, bytes, disclosed, parent ? &*parent : nullptr, &arrival.check);
  if (admission.code != wire::Code::ok) {
    stats_.messages_rejected++;
    spdlog::warn("event=rejected agency={} id={} code={} detail=\"{}\"", sender.id,
                 admission.message_id.empty() ? "-" : admission.message_id,
                 wire::EnumNameCode(admission.code), admission.detail);
    reply(admission.message_id, BuildReceipt(admission.message_id, admission.code, admission.detail,
                                             sender.id, {}, policies.version()));
    return;
  }

  const int64_t now = NowMs();
  const policy::Retention& retention = policies.For(sender).retention;
  int64_t expires = now + retention.undelivered_days * kDayMs;
  if (peek->expires_at()) {
    if (auto at = wire::ParseRfc3339Millis(peek->expires_at()->string_view())) expires = std::min(expires, *at);
  }
  // Receipts (and rows) outlive the longest a message may wait, so that a
  // resend of a still-queued message is always recognised.
  const int64_t purge_after =
      now + std::max(retention.delivered_days, retention.undelivered_days) * kDayMs;
  const std::string case_ref = peek->case_ref() ? peek->case_ref()->str() : std::string();
  // What every ledger record of this message shares: names, never values.
  audit::Entry base;
  base.message_id = admission.message_id;
  // The case's pseudonym, computed once for all of the message's records.
  base.case_pseudonym = ledger_->CaseOf(sender.id, case_ref);
  base.sender = sender.id;
  base.type = wire::EnumNamePayload(peek->payload_type());
  base.purpose = peek->purpose() ? peek->purpose()->str() : "";
  base.legal_basis = peek->legal_basis() ? peek->legal_basis()->str() : "";
  base.handling = wire::EnumNameHandling(peek->handling());
  base.policy_version = policies.version();
  base.sender_kind = sender.kind;
  base.sender_region = sender.region;
  base.urgency = wire::EnumNameUrgency(peek->urgency());
  if (const auto* response = peek->payload_as_ReferralResponse()) {
    base.response = wire::EnumNameResponseDecision(response->decision());
  }
  // The thread's id (never a thread reference): `liaison audit query
  // --thread` follows a case thread by it.
  base.thread = ledger_->ThreadOf(admission.thread_root);
  base.permission = admission.permission;
  // The referral this response answers (a payload field: it stops a clock,
  // and reaches the ledger only as ReferralLink).
  const auto* response = peek->payload_as_ReferralResponse();
  const std::string answers = response && response->in_reply_to() ? response->in_reply_to()->str() : "";
  // Response deadlines: a referral starts a clock for each recipient it is
  // stored for; a response stored for the referral's sender stops the
  // clock of its own copy of that referral (the responder's).
  const size_t urgency = static_cast<size_t>(peek->urgency());
  const int64_t deadline_ms =
      peek->payload_type() == wire::Payload::CaseReferral && urgency < policy::ResponseDeadlines().size()
          ? policies.vocabulary().response_deadlines[urgency]
          : 0;
  auto with_recipient = [&](audit::Entry entry, const std::string& recipient) {
    entry.recipient = recipient;
    if (const Agency* a = policies.directory().Find(recipient)) {
      entry.recipient_kind = a->kind;
      entry.recipient_region = a->region;
    }
    return entry;
  };
  if (erasure) {
    auto erased = reader_->QueuedOfCase(sender.id, case_ref);
    if (!erased.ok()) return unavailable(admission.message_id, erased.status());
    if (!erased->empty()) {
      spdlog::info("event=erased_undelivered agency={} id={} messages={}", sender.id,
                   admission.message_id, erased->size());
    }
    for (const store::ExpiredMessage& e : *erased) {
      forming_.erased.push_back(e.seq);
      --queue_depth_[e.recipient];
      // A copy in flight is withdrawn too: its ACK no longer counts.
      windows_.Withdraw(e.recipient, e.seq);
      audit::Entry entry = with_recipient(base, e.recipient);
      entry.decision = ledger::Decision::erased;
      entry.message_id = e.message_id;
      entry.thread.clear();  // the withdrawal's thread, not the removed message's
      // The removed message's own type; purpose and the like are the
      // withdrawal's (the store keeps no more about the message).
      if (std::string type = store::CopyLabel::Parse(e.label).type; !type.empty()) entry.type = std::move(type);
      entry.reason = "case-withdrawn:" + admission.message_id;
      ledger_->Add(entry);
    }
  }

  // The label carries the ledger's case pseudonym and the type to the
  // message's later ledger records (delivered, expired, erased).
  const std::string label = store::CopyLabel{base.case_pseudonym, base.type}.Format();
  std::vector<RecipientOutcome> outcomes = std::move(admission.unresolved);
  for (const RecipientOutcome& o : outcomes) {
    if (o.code != wire::Code::denied) continue;
    audit::Entry entry = with_recipient(base, o.recipient);
    entry.decision = ledger::Decision::denied;
    entry.rules = o.rules;
    entry.reason = o.reason;
    ledger_->Add(entry);
  }
  for (Delivery& d : admission.deliveries) {
    int64_t& depth = queue_depth_[d.recipient->id];
    if (depth >= static_cast<int64_t>(config_.store.max_queue_per_recipient)) {
      d.outcome.code = wire::Code::queue_full;
      d.outcome.reason = "recipient-queue-full";
      spdlog::warn("event=queue_full recipient={} depth={}", d.recipient->id, depth);
    } else {
      forming_.copies.push_back({sender.id, admission.message_id, d.recipient->id, case_ref, label,
                                 std::vector<uint8_t>(d.envelope.data(), d.envelope.data() + d.envelope.size()),
                                 now, expires, purge_after, /*case_keyed=*/!erasure});
      ++depth;
      // Operators hear once when a queue reaches 80% of its limit.
      if (depth == static_cast<int64_t>(config_.store.max_queue_per_recipient * 8 / 10)) {
        spdlog::warn("event=queue_threshold recipient={} depth={} limit={}", d.recipient->id, depth,
                     config_.store.max_queue_per_recipient);
      }
      stats_.stored++;
      if (deadline_ms > 0) {
        forming_.clocks_started.push_back({{sender.id, admission.message_id, d.recipient->id, label,
                                            static_cast<int32_t>(urgency), now, now + deadline_ms},
                                           purge_after});
      }
      if (!answers.empty()) forming_.clocks_answered.push_back({d.recipient->id, answers, sender.id, now});
      forming_.threads.push_back({std::move(d.thread), purge_after});
      d.outcome.code = wire::Code::stored;
      touched_.insert(d.recipient->id);
      // The disclosure is recorded before anything leaves: if the ledger
      // cannot be written, the batch is rolled back and nothing is sent.
      audit::Entry entry = with_recipient(base, d.recipient->id);
      entry.decision = ledger::Decision::released;
      if (!answers.empty()) entry.in_reply_to = audit::ReferralLink(d.recipient->id, answers);
      entry.rules = d.outcome.rules;
      for (const std::string* f : d.outcome.released) entry.released.push_back(*f);
      for (const std::string* f : d.outcome.transformed) entry.transformed.push_back(*f);
      for (const std::string* f : d.outcome.dropped) entry.dropped.push_back(*f);
      if (d.outcome.break_glass) {
        ledger_->Add(entry);
        entry.decision = ledger::Decision::break_glass;
        entry.released.clear();
        entry.transformed.clear();
        entry.dropped.clear();
      }
      ledger_->Add(std::move(entry));
    }
    outcomes.push_back(std::move(d.outcome));
  }
  for (const RecipientOutcome& o : outcomes) {
    metrics_->Decision(sender.id, peek->payload_type(), o.code);
  }
  if (admission.grant_accepted) {
    // Granted for the whole thread, in this batch: a derived message
    // admitted after it committed is held to it.
    forming_.grants.push_back({admission.thread_root, admission.permission, purge_after});
    spdlog::info("event=permission_granted agency={} id={} grantees={}", sender.id, admission.message_id,
                 admission.permission.size());
  }
  // Per message: debug, so that the message path does not wait on the log.
  spdlog::debug("event=message agency={} id={} type={} recipients={} stored={}", sender.id,
               admission.message_id, wire::EnumNamePayload(peek->payload_type()), outcomes.size(),
               std::count_if(outcomes.begin(), outcomes.end(),
                             [](const auto& o) { return o.code == wire::Code::stored; }));
  if (erasure) {
    // The case's key goes with this batch, after its copies of the
    // withdrawal (sealed under the store key, so they stay deliverable):
    // every copy of the case sealed under it, in this store and in every
    // backup, no longer opens (docs/audit.md, "Erasure that shreds").
    forming_.shred.push_back({sender.id, case_ref});
    // Its referrals wait for no response any more.
    forming_.clocks_withdrawn.push_back({sender.id, base.case_pseudonym});
    spdlog::info("event=case_shred_in_batch agency={} id={}", sender.id, admission.message_id);
  }
  auto receipt = BuildReceipt(admission.message_id, wire::Code::ok, "", sender.id, outcomes,
                              policies.version());
  std::vector<uint8_t> receipt_bytes(receipt.data(), receipt.data() + receipt.size());
  forming_.receipts.push_back({sender.id, admission.message_id, receipt_bytes, purge_after});
  receipt_filter_.Add(sender.id, admission.message_id, purge_after);
  uncommitted_receipts_[ReceiptKey(sender.id, admission.message_id)] = receipt_bytes;
  forming_receipt_keys_.push_back(ReceiptKey(sender.id, admission.message_id));
  replies_.push_back({routing_id, std::move(receipt_bytes), admission.message_id, sender.id});
  // A barrier after it too: a later message of the case gets a new key in
  // a later batch, rather than one this batch's shred would take.
  if (erasure) Drain();
}

void Pipeline::HandleAck(const Agency& agency, std::span<const uint8_t> body,
                         const std::string& routing_id) {
  std::vector<uint8_t> storage;
  const wire::Ack* ack = wire::VerifyAck(wire::Aligned(body, storage));
  if (!ack) {
    stats_.malformed_frames++;
    auto receipt = BuildReceipt("", wire::Code::malformed, "ACK body is not a valid Ack table",
                                agency.id, {});
    link_.SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    return;
  }
  stats_.acks++;
  const std::string id = ack->message_id()->str();
  // Only a message that was delivered to this agency can be acked by it.
  const DeliveryWindows::Acked acked =
      windows_.TakeAcked(agency.id, ack->sender() ? ack->sender()->string_view() : "", id);
  if (acked.ambiguous_senders > 1) {
    spdlog::warn("event=ack_ambiguous agency={} senders={} action=ignored_redeliver", agency.id,
                 acked.ambiguous_senders);
  }
  if (acked.copies.empty()) return;
  // Room in the window: more committed copies go out after this drain,
  // without waiting for the commit that records the ack.
  window_room_.insert(agency.id);
  const auto set = policies();
  const int64_t now = NowMs();
  for (const auto& [seq, message] : acked.copies) {
    // In flight means queued: an expiry or erasure takes it out of flight.
    forming_.acks.push_back({agency.id, seq, now});
    const std::string& sender = message.sender;
    --queue_depth_[agency.id];
    auto notice = BuildReceipt(id, wire::Code::ok, "", sender, {{agency.id, wire::Code::delivered}},
                               set->version());
    forming_.notices.emplace_back(sender, std::vector<uint8_t>(notice.data(), notice.data() + notice.size()));
    notice_for_.insert(sender);
    spdlog::debug("event=delivered recipient={} agency={} id={}", agency.id, sender, id);
    audit::Entry entry = CopyEntry(ledger::Decision::delivered, id, message.label);
    entry.sender = sender;
    entry.recipient = agency.id;
    entry.recipient_kind = agency.kind;
    entry.recipient_region = agency.region;
    if (const Agency* s = set->directory().Find(sender)) {
      entry.sender_kind = s->kind;
      entry.sender_region = s->region;
    }
    entry.policy_version = set->version();
    ledger_->Add(std::move(entry));
  }
}

std::string Pipeline::ReceiptKey(const std::string& sender, const std::string& id) {
  return sender + '\0' + id;
}

void Pipeline::FinishBatch(bool checkpoint) {
  AdmitArrivals();
  batch_in_flight_.clear();
  // Pending() reads committed copies only, so a window refilled by acks can
  // be pumped at once: deliveries are not held to the commit cycle.
  for (const std::string& recipient : window_room_) Pump(recipient);
  window_room_.clear();
  // While a commit runs, the batch keeps forming; it goes when that commit
  // returns (OnCommitted): group commit without a timer.
  if (!committer_->busy()) SubmitForming(checkpoint);
}

void Pipeline::SubmitForming(bool checkpoint) {
  const bool checkpoint_due = checkpoint || std::chrono::steady_clock::now() - last_checkpoint_ >=
                                                std::chrono::seconds(config_.ledger.checkpoint_seconds);
  if (forming_.empty() && replies_.empty() && touched_.empty() && notice_for_.empty() &&
      !ledger_->has_batch() && !checkpoint_due) {
    return;
  }
  Committing c;
  c.replies = std::move(replies_);
  c.touched = std::move(touched_);
  c.notice_for = std::move(notice_for_);
  c.receipt_keys = std::move(forming_receipt_keys_);
  c.events = std::move(forming_events_);
  forming_events_.clear();
  c.notices_sent = forming_.notices_sent;
  c.purged_before_ms = forming_.purge_before_ms;
  if (c.purged_before_ms > 0) c.forget_through = receipt_filter_.Seal(c.purged_before_ms);
  replies_.clear();
  touched_.clear();
  notice_for_.clear();
  forming_receipt_keys_.clear();
  forming_messages_ = 0;
  // The batch's ledger records commit in the same store transaction as its
  // decisions: both are durable or neither is. The writer seals them into
  // the chain (formatting, hashing, signing), off this thread; a decision
  // that cannot be recorded is not acted on (the batch is refused).
  LedgerWork ledger;
  if (ledger_->has_batch() || checkpoint_due) {
    ledger = {ledger_.get(), ledger_->TakeBatch(), checkpoint_due};
    if (checkpoint_due) last_checkpoint_ = std::chrono::steady_clock::now();
  }
  if (ledger_synced_ > ledger_trimmed_) {
    forming_.trim_ledger_to = ledger_synced_;
    c.trim_to = ledger_synced_;
  }
  if (forming_.empty() && !ledger.ledger) {
    // Nothing to write (rejections, resends of committed messages, a
    // reconnect): answer at once.
    Finish(std::move(c), CommitResult{});
    return;
  }
  committing_ = std::move(c);
  committer_->Submit(std::move(forming_), std::move(ledger));
  forming_ = {};
}

void Pipeline::OnCommitted(CommitResult result) {
  if (!committing_) return;
  Committing c = std::move(*committing_);
  committing_.reset();
  Finish(std::move(c), std::move(result));
  // What arrived during that commit goes now.
  SubmitForming(false);
}

void Pipeline::Drain(bool checkpoint) {
  ++drains_;
  while (committer_->busy()) OnCommitted(committer_->Wait());
  SubmitForming(checkpoint);
  while (committer_->busy()) OnCommitted(committer_->Wait());
}

void Pipeline::Finish(Committing c, CommitResult committed) {
  const Status& result = committed.status;
  if (committed.ledger_written) {
    if (result.ok()) {
      ledger_->Keep();
      SyncLedger();
    } else {
      ledger_->Undo();
    }
  }
  if (committed.ledger_failed) {
    stats_.ledger_failures++;
    spdlog::error("event=ledger_write_failed error=\"{}\" action=batch_refused", result.message());
    metrics_->SetReady(false, "the ledger cannot be written");
  } else if (committed.ledger_written) {
    metrics_->SetReady(true, "");
  }
  for (const std::string& key : c.receipt_keys) uncommitted_receipts_.erase(key);
  for (int64_t seq : c.notices_sent) notices_sending_.erase(seq);
  if (result.ok()) {
    stats_.commits++;
    if (c.trim_to > ledger_trimmed_) ledger_trimmed_ = c.trim_to;
    // The purge removed every receipt due by its cut-off: of the keys the
    // filter held when the batch formed (Seal), those go.
    if (c.purged_before_ms > 0) receipt_filter_.Forget(c.purged_before_ms, c.forget_through);
  } else {
    // Fail closed: nothing of this batch is stored, so nobody hears
    // "stored". The batch forming meanwhile built on this one (its resends
    // were answered from this batch's receipts): it is refused too.
    stats_.commit_failures++;
    spdlog::error("event=commit_failed messages={} error=\"{}\"", c.replies.size() + replies_.size(),
                  result.message());
    for (Reply& r : replies_) c.replies.push_back(std::move(r));
    replies_.clear();
    forming_ = {};
    forming_receipt_keys_.clear();
    forming_messages_ = 0;
    uncommitted_receipts_.clear();
    notices_sending_.clear();
    ledger_->Discard();
    {
      // The events (policy versions going live, refused reloads) were not
      // decided by a message that its sender will resend: they go again
      // with the next batch instead of being lost.
      std::lock_guard<std::mutex> lock(events_mu_);
      std::vector<audit::Entry> again = std::move(c.events);
      for (auto& e : forming_events_) again.push_back(std::move(e));
      for (auto& e : events_) again.push_back(std::move(e));
      events_ = std::move(again);
      forming_events_.clear();
    }
    touched_.clear();
    notice_for_.clear();
    c.touched.clear();
    c.notice_for.clear();
    const auto set = policies();
    for (Reply& r : c.replies) {
      auto receipt = BuildReceipt(
          r.message_id, wire::Code::unavailable,
          "the broker could not store the message; resend it later with the same id", r.sender, {},
          set->version());
      r.receipt.assign(receipt.data(), receipt.data() + receipt.size());
    }
    depths_stale_ = true;
    // Acks of the batch were not recorded: everything unacked goes out
    // again (the agents re-ack what they already have).
    for (std::string& recipient : windows_.ResetAll()) c.touched.insert(std::move(recipient));
  }
  const auto sent_at = std::chrono::steady_clock::now();
  for (const Reply& r : c.replies) {
    link_.SendTo(r.routing_id, wire::kReceipt, r.receipt.data(), r.receipt.size());
    // Receipts built here are valid; only the code is needed.
    metrics_->Receipt(flatbuffers::GetRoot<wire::Receipt>(r.receipt.data())->code());
    metrics_->ReceiptLatency(std::chrono::duration_cast<std::chrono::microseconds>(sent_at - r.received));
  }
  if (result.ok()) {
    // Receivers that have read their whole queue get the new copies from
    // here, not from a read of the store (the seqs are the store's).
    std::vector<int64_t>& seqs = committed.seqs;
    std::vector<store::WriteBatch::Copy>& copies = committed.copies;
    for (size_t i = 0; i < copies.size() && i < seqs.size(); ++i) {
      store::WriteBatch::Copy& copy = copies[i];
      if (seqs[i] <= 0) {
        windows_.Forget(copy.recipient);
        continue;
      }
      windows_.Offer(copy.recipient, {seqs[i], std::move(copy.sender), std::move(copy.message_id),
                                      std::move(copy.label), std::move(copy.envelope)});
    }
  }
  if (depths_stale_) {
    if (auto depths = reader_->QueueDepths(); depths.ok()) {
      queue_depth_ = std::move(*depths);
      depths_stale_ = false;
    }
  }
  for (const std::string& recipient : c.touched) Pump(recipient);
  for (const std::string& agency : c.notice_for) FlushNotices(agency);
}

void Pipeline::Pump(const std::string& recipient) {
  while (size_t room = windows_.Room(recipient)) {
    const std::string* receiver = link_.LiveReceiverOf(recipient);
    if (!receiver) return;
    if (windows_.IsCaughtUp(recipient)) {
      // Its committed queue past the cursor is in memory (CommitResult).
      DeliveryWindows::Fresh* m = windows_.NextFresh(recipient);
      if (!m) return;
      if (!windows_.MaySend(recipient, m->message_id)) return;
      const Link::SendResult sent = link_.SendTo(*receiver, wire::kDeliver, m->envelope.data(), m->envelope.size());
      if (sent == Link::SendResult::kFull) return;  // the timer tries again
      if (sent == Link::SendResult::kGone) {
        spdlog::info("event=receiver_gone agency={}", recipient);
        link_.DropReceiver(recipient);
        windows_.Reset(recipient);  // the next receiver starts from the beginning
        continue;
      }
      windows_.Sent(recipient, m->seq, {std::move(m->sender), std::move(m->message_id), NowMs(), std::move(m->label)});
      windows_.PopFresh(recipient);
      stats_.deliveries++;
      continue;
    }
    // Committed copies only: nothing leaves before its batch is durable.
    std::vector<int64_t> damaged;
    auto pending = reader_->Pending(recipient, windows_.Cursor(recipient), static_cast<int>(room), &damaged);
    if (!pending.ok()) {
      spdlog::error("event=store_failed recipient={} error=\"{}\"", recipient, pending.status().message());
      return;
    }
    if (pending->empty() && damaged.empty()) {
      // Everything committed for it went out: what commits next is fed
      // from memory (Finish), until something makes it read again.
      windows_.CaughtUp(recipient);
      return;
    }
    // Set aside with the next commit; skipped until then.
    forming_.set_aside.insert(forming_.set_aside.end(), damaged.begin(), damaged.end());
    const int64_t now = NowMs();
    bool gone = false;
    for (store::QueuedMessage& m : *pending) {
      // In order: after the ack of another sender's message of this id.
      if (!windows_.MaySend(recipient, m.message_id)) return;
      const Link::SendResult sent = link_.SendTo(*receiver, wire::kDeliver, m.envelope.data(), m.envelope.size());
      if (sent == Link::SendResult::kFull) return;  // the timer tries again
      if (sent == Link::SendResult::kGone) {
        spdlog::info("event=receiver_gone agency={}", recipient);
        link_.DropReceiver(recipient);
        windows_.Reset(recipient);  // the next receiver starts from the beginning
        gone = true;
        break;
      }
      windows_.Sent(recipient, m.seq, {m.sender, m.message_id, now, std::move(m.label)});
      stats_.deliveries++;
    }
    if (gone) continue;
    // Every good copy of this read went out: the damaged ones are passed.
    for (int64_t seq : damaged) windows_.Skip(recipient, seq);
  }
}

void Pipeline::FlushNotices(const std::string& agency) {
  const std::string* receiver = link_.LiveReceiverOf(agency);
  if (!receiver) return;
  auto notices = reader_->Notices(agency, 256);
  if (!notices.ok() || notices->empty()) return;
  for (const store::Notice& n : *notices) {
    if (notices_sending_.count(n.seq)) continue;  // sent; its deletion commits soon
    if (link_.SendTo(*receiver, wire::kNotice, n.receipt.data(), n.receipt.size()) != Link::SendResult::kSent) break;
    // Sent at least once; the deletion commits with the next batch.
    forming_.notices_sent.push_back(n.seq);
    notices_sending_.insert(n.seq);
  }
}


void Pipeline::FireClocks(int64_t now) {
  // At most this many a second: after a long outage the rest follow in the
  // next ticks, without one huge batch.
  constexpr int kClocksPerTick = 256;
  // Like expiry, a barrier only when something is due: a response still in
  // a batch would otherwise race the firing of its clock. After the drain
  // the store holds every response decided so far, and a clock whose
  // firing is being committed is read again only after that commit, so no
  // clock fires twice.
  auto due = reader_->DueClocks(now, kClocksPerTick);
  if (due.ok() && !due->empty()) {
    Drain();
    due = reader_->DueClocks(now, kClocksPerTick);
  }
  if (!due.ok()) {
    spdlog::error("event=store_failed error=\"{}\"", due.status().message());
  } else {
    const auto set = policies();
    for (const store::Clock& clock : *due) FireClock(*set, clock, now);
  }
  if (auto oldest = reader_->OldestOpenClock(); !oldest.ok()) {
    spdlog::error("event=store_failed error=\"{}\"", oldest.status().message());
  } else {
    metrics_->SetOldestOpenClockAge(*oldest ? std::max<int64_t>(0, now - **oldest) / 1000.0 : 0.0);
  }
}

void Pipeline::FireClock(const policy::PolicySet& set, const store::Clock& clock, int64_t now) {
  const std::string urgency = wire::EnumNameUrgency(static_cast<wire::Urgency>(clock.urgency));
  const int64_t late_s = std::max<int64_t>(0, now - clock.due_ms) / 1000;
  const int64_t deadline_s = std::max<int64_t>(0, clock.due_ms - clock.started_ms) / 1000;
  const Agency* sender = set.directory().Find(clock.sender);
  const Agency* recipient = set.directory().Find(clock.recipient);
  // The escalation contact the sender's agency file names now (a DPO may
  // have changed it since the referral); one that is the sender or the
  // recipient already hears.
  std::string escalation = sender ? sender->escalation_agency : "";
  if (escalation == clock.sender || escalation == clock.recipient) escalation.clear();
  audit::Entry entry = CopyEntry(ledger::Decision::overdue, clock.message_id, clock.label);
  // Metadata only, the same for all three: no field of the referral.
  const std::string detail = "urgency=" + urgency + " deadline_s=" + std::to_string(deadline_s) +
                             " late_s=" + std::to_string(late_s) + " type=" + entry.type + " sender_kind=" +
                             (sender ? sender->kind : "") + " recipient_kind=" + (recipient ? recipient->kind : "");
  auto notify = [&](const std::string& agency, const std::string& message_id, const char* reason) {
    auto notice = BuildReceipt(message_id, wire::Code::ok, detail, clock.sender,
                               {{clock.recipient, wire::Code::overdue, reason}}, set.version());
    forming_.notices.emplace_back(agency, std::vector<uint8_t>(notice.data(), notice.data() + notice.size()));
    notice_for_.insert(agency);
  };
  // Fired and notified in one batch: both commit, or neither (and the next
  // tick tries again).
  forming_.clocks_fired.push_back({clock.sender, clock.message_id, clock.recipient, now});
  notify(clock.sender, clock.message_id, "no-response-in-time");
  notify(clock.recipient, clock.message_id, "response-reminder");
  // The escalation contact never received the referral: not even its id.
  if (!escalation.empty()) notify(escalation, "", "escalation");
  entry.sender = clock.sender;
  entry.recipient = clock.recipient;
  if (sender) {
    entry.sender_kind = sender->kind;
    entry.sender_region = sender->region;
  }
  if (recipient) {
    entry.recipient_kind = recipient->kind;
    entry.recipient_region = recipient->region;
  }
  entry.urgency = urgency;
  entry.reason = "no-response-in-time";
  entry.agency = escalation;
  entry.late_seconds = static_cast<uint64_t>(late_s);
  entry.deadline_seconds = static_cast<uint64_t>(deadline_s);
  entry.policy_version = set.version();
  ledger_->Add(entry);
  metrics_->Overdue(urgency);
  spdlog::info("event=overdue agency={} recipient={} id={} urgency={} late_s={} escalated_to={}", clock.sender,
               clock.recipient, wire::LoggableMessageId(clock.message_id), urgency, late_s,
               escalation.empty() ? "-" : escalation);
}

void Pipeline::SyncLedger() {
  // The store holds the ledger's records until the file has them on disk;
  // the next commit forgets those (SubmitForming). The sync runs on the
  // ledger's thread: this one never waits for the disk. Asked after every
  // commit that kept records (it starts only when the last one is done), so
  // each fdatasync flushes a few milliseconds of records: once a second, a
  // second's worth made the store's own commits queue behind it (p99 at
  // 2,000 msg/s: 40 ms with, 6 ms without, in make bench).
  if (auto synced = ledger_->SyncInBackground(); !synced.ok()) {
    spdlog::error("event=ledger_write_failed error=\"{}\"", synced.status().message());
  } else {
    ledger_synced_ = *synced;
  }
}

void Pipeline::OnTimer() {
  const int64_t now = NowMs();
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    for (auto& e : events_) {
      ledger_->Add(e);
      forming_events_.push_back(std::move(e));
    }
    events_.clear();
  }
  HandleSetAsideCalls();
  if (receipt_scan_) LoadReceiptKeys(std::chrono::milliseconds(50));
  metrics_->Beat();
  metrics_->SetQueueDepths(queue_depth_);
  // Expiry reads the store, so it is a barrier: only when something is due,
  // everything before is committed first (an ACK still in a batch would
  // otherwise race the expiry of the same copy).
  auto due = reader_->Due(now);
  if (due.ok() && !due->empty()) {
    Drain();
    due = reader_->Due(now);
  }
  if (!due.ok()) {
    spdlog::error("event=store_failed error=\"{}\"", due.status().message());
  } else {
    const auto set = policies();
    for (const store::ExpiredMessage& e : *due) {
      stats_.expired++;
      forming_.expired.push_back(e.seq);
      --queue_depth_[e.recipient];
      windows_.Withdraw(e.recipient, e.seq);
      auto notice = BuildReceipt(e.message_id, wire::Code::ok, "", e.sender,
                                 {{e.recipient, wire::Code::expired, "not-delivered-in-time"}},
                                 set->version());
      forming_.notices.emplace_back(e.sender, std::vector<uint8_t>(notice.data(), notice.data() + notice.size()));
      notice_for_.insert(e.sender);
      spdlog::info("event=expired agency={} recipient={} id={}", e.sender, e.recipient, e.message_id);
      audit::Entry entry = CopyEntry(ledger::Decision::expired, e.message_id, e.label);
      entry.sender = e.sender;
      entry.recipient = e.recipient;
      entry.reason = "not-delivered-in-time";
      entry.policy_version = set->version();
      ledger_->Add(entry);
    }
  }
  FireClocks(now);
  if (++timer_ticks_ % 60 == 0) forming_.purge_before_ms = now;
  SyncLedger();
  // Unacked deliveries past the timeout go out again, in order.
  for (const auto& [recipient, copies] : windows_.Overdue(now)) {
    stats_.redeliveries += copies;
    spdlog::info("event=redelivery recipient={} messages={}", recipient, copies);
  }
  // Also retries recipients whose queue was full.
  for (std::string& recipient : windows_.Recipients()) touched_.insert(std::move(recipient));
  for (const auto& [recipient, depth] : queue_depth_) {
    if (depth > 0 && link_.HasReceiver(recipient)) touched_.insert(recipient);
  }
  // Notices that could not be sent before (no receiver, full queue).
  for (std::string& agency : link_.ReceiverAgencies()) notice_for_.insert(std::move(agency));
  FinishBatch();
}

}  // namespace liaison::broker
