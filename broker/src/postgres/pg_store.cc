#include "postgres/pg_store.h"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "store/sealing.h"

namespace liaison::store {
namespace {

// Rows have the states of the SQLite store: 0 queued, 2 acked, 3 expired,
// 4 erased, 5 damaged (does not decrypt, set aside), 6 purged by an
// operator (was 5).

// Version 1. A later version adds a step to Migrate and never edits this.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE messages (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sender TEXT NOT NULL,
  message_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  case_hash BYTEA,
  state INTEGER NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  acked_ms BIGINT,
  purge_after_ms BIGINT NOT NULL,
  label TEXT,
  UNIQUE (sender, message_id, recipient));
CREATE TABLE bodies (seq BIGINT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE INDEX messages_by_recipient ON messages (recipient, state, seq);
CREATE INDEX messages_by_case ON messages (sender, case_hash, state);
CREATE INDEX messages_by_expiry ON messages (state, expires_ms);
CREATE TABLE receipts (
  sender TEXT NOT NULL, message_id TEXT NOT NULL, receipt BYTEA NOT NULL,
  purge_after_ms BIGINT NOT NULL, PRIMARY KEY (sender, message_id));
CREATE INDEX receipts_by_purge ON receipts (purge_after_ms);
CREATE TABLE disclosures (
  sender TEXT NOT NULL, case_hash BYTEA NOT NULL, recipient TEXT NOT NULL,
  PRIMARY KEY (sender, case_hash, recipient));
CREATE TABLE notices (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, agency TEXT NOT NULL, receipt BYTEA NOT NULL);
CREATE INDEX notices_by_agency ON notices (agency, seq);
CREATE TABLE ledger_tail (seq BIGINT PRIMARY KEY, first_seq BIGINT NOT NULL, lines TEXT NOT NULL);
CREATE TABLE ledger_position (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
)sql";

// Version 2: the lease that fences brokers sharing one database (see
// PgStore::AcquireLease). liaison_fence() is the first statement of every
// batch of a fenced store: it fails the transaction unless `e` is still the
// unexpired lease's epoch, and holds the lease row (FOR SHARE; FOR KEY
// SHARE since version 10) until the batch ends, so a takeover (which locks
// that row FOR UPDATE) waits for the batch and no batch of an older epoch
// commits after it.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE lease (
  id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, epoch BIGINT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL);
CREATE FUNCTION liaison_fence(e BIGINT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM lease WHERE id = 1 AND epoch = e AND expires_at > clock_timestamp() FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the lease of epoch % is no longer held by this broker', e USING ERRCODE = 'LF001';
  END IF;
END $$;
)sql";

// The periodic purge finds the rows it deletes without scanning every row
// kept for the retention period.
constexpr const char* kSchemaV3 = R"sql(
CREATE INDEX messages_by_purge ON messages (purge_after_ms) WHERE state <> 0;
)sql";

// Version 4: the last committed batch's token (see PgStore::RunPipeline):
// when the connection is lost after COMMIT was sent, the token says whether
// that COMMIT happened.
constexpr const char* kSchemaV4 = R"sql(
CREATE TABLE last_batch (id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);
INSERT INTO last_batch (id, token) VALUES (1, '');
)sql";

// Version 5: each case's key, wrapped under the case-key ring's KEK of
// `epoch` (store/case_keys.h); deleted to shred the case.
constexpr const char* kSchemaV5 = R"sql(
CREATE TABLE case_keys (
  sender TEXT NOT NULL, case_hash BYTEA NOT NULL, epoch BIGINT NOT NULL, wrapped BYTEA NOT NULL,
  PRIMARY KEY (sender, case_hash));
)sql";

// Version 6: response deadlines, one clock per CaseReferral copy (see
// store::Clock); the partial indexes are what the core's reads look up.
constexpr const char* kSchemaV6 = R"sql(
CREATE TABLE clocks (
  sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL, label TEXT NOT NULL,
  urgency INTEGER NOT NULL, started_ms BIGINT NOT NULL, due_ms BIGINT NOT NULL,
  purge_after_ms BIGINT NOT NULL, fired_ms BIGINT, answered_ms BIGINT,
  PRIMARY KEY (sender, message_id, recipient));
CREATE INDEX clocks_running ON clocks (due_ms) WHERE fired_ms IS NULL AND answered_ms IS NULL;
CREATE INDEX clocks_open ON clocks (started_ms) WHERE answered_ms IS NULL;
CREATE INDEX clocks_by_purge ON clocks (purge_after_ms);
)sql";

// Version 7: case threads, one row per stored copy under the reference the
// copy carries (see store::Thread).
constexpr const char* kSchemaV7 = R"sql(
CREATE TABLE threads (
  ref TEXT PRIMARY KEY, holder TEXT NOT NULL, message_id TEXT NOT NULL, root TEXT NOT NULL, origin TEXT NOT NULL,
  handling INTEGER NOT NULL, purpose TEXT NOT NULL, circle TEXT NOT NULL, onward TEXT NOT NULL,
  purge_after_ms BIGINT NOT NULL);
CREATE INDEX threads_by_purge ON threads (purge_after_ms);
)sql";

// Version 8: a queued copy's body stays in its row. Bodies are ciphertext
// (nothing to compress) of a few KiB: PostgreSQL's default (compress, then
// move out of line past ~2 KiB) cost a failed compression and two TOAST
// chunks, each with an index entry, per copy, and as many deletions at its
// ack. Up to ~8 KiB a row now holds its body; a larger one goes out of
// line without the compression attempt.
constexpr const char* kSchemaV8 = R"sql(
ALTER TABLE bodies SET (toast_tuple_target = 8160);
ALTER TABLE bodies ALTER COLUMN sealed SET STORAGE EXTERNAL;
)sql";

// Version 9: permissions a thread's originator granted (PermissionGrant),
// for the whole thread: its root and one grantee ("agency" or
// "kind:<kind>") a row.
constexpr const char* kSchemaV9 = R"sql(
CREATE TABLE thread_grants (
  root TEXT NOT NULL, grantee TEXT NOT NULL, purge_after_ms BIGINT NOT NULL,
  PRIMARY KEY (root, grantee));
CREATE INDEX thread_grants_by_purge ON thread_grants (purge_after_ms);
)sql";

// Version 10: a batch's ledger lines (often 100 KiB and more at full
// load) go out of line without a compression attempt: pglz cost the
// writer 2-4 ms a batch, and the lines are hashed text that shrinks
// little. They are trimmed once the ledger file has them on disk.
//
// Also: liaison_fence() holds the lease row FOR KEY SHARE instead of FOR
// SHARE. A renewal (an UPDATE of expires_at) no longer waits for the batch
// in flight, nor the next batch's fence for the renewal: that convoy, once
// a second, was the worst latency at 2,000 msg/s. A takeover still waits
// for the batch, because l_acquire_lease first locks the row FOR UPDATE.
constexpr const char* kSchemaV10 = R"sql(
ALTER TABLE ledger_tail ALTER COLUMN lines SET STORAGE EXTERNAL;
CREATE OR REPLACE FUNCTION liaison_fence(e BIGINT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM lease WHERE id = 1 AND epoch = e AND expires_at > clock_timestamp() FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the lease of epoch % is no longer held by this broker', e USING ERRCODE = 'LF001';
  END IF;
END $$;
)sql";

// Serialises schema changes of brokers starting at once (any constant
// both agree on).
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock(7381926501)";

// Every statement the store runs, prepared once per connection. Parameters
// are cast in the SQL, so the server knows their types; all are sent in
// binary (text as its bytes, bigint as 8 bytes big-endian, bytea as is).
enum Stmt {
  kEnqueue, kPutReceipt, kAck, kChangeQueued, kChangeSetAside, kAddNotices, kDeleteNotices, kAppendLedger,
  kTrimLedger, kPurge, kFindReceipt, kFindReceipts, kReceiptKeys, kPending, kSetAsideNow, kDue, kQueuedOfCase,
  kDepths, kDisclosures, kNotices, kLedgerPosition, kLedgerTail, kSummaries, kEntries, kSetAside, kKeyCheck,
  kPutKeyCheck, kFence, kAcquireLease, kRenewLease, kReleaseLease, kMarkBatch, kBatchMark, kCaseKeysOf, kPutCaseKeys, kDeleteCaseKeys,
  kAllCaseKeys, kRewrapCaseKeys, kKekMeta, kPutKekMeta, kUnusedCaseKeys, kStartClocks, kAnswerClocks, kFireClocks,
  kDueClocks, kOldestClock, kWithdrawClocks, kStartThreads, kAddGrants, kFindThreads, kStmtCount
};

struct StatementText {
  const char* name;
  const char* sql;
  // Planned anew at every use (sent unprepared) instead of by a cached
  // generic plan: see l_ack. A statement that joins a batch's arrays to a
  // table either is, or looks each key up in a LATERAL subquery (which the
  // planner cannot turn into a scan of the table): the generic plan of a
  // plain join, made once while the table is small, hash-joins a scan of
  // the whole table for as long as the session lasts.
  bool plan_each_time = false;
};

constexpr StatementText kStatements[kStmtCount] = {
    // A batch's copies in one statement (arrays, one element per copy, in
    // queue order: the identity follows the ordinality). A copy already
    // queued (a resend) is left as it is, body and all.
    {"l_enqueue",
     "WITH i AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], "
     "$6::bigint[], $7::bigint[], $8::text[], $9::bytea[]) WITH ORDINALITY AS t(sender, message_id, recipient, "
     "case_hash, created_ms, expires_ms, purge_after_ms, label, sealed, ord)), "
     "m AS (INSERT INTO messages (sender, message_id, recipient, case_hash, state, created_ms, expires_ms, "
     "purge_after_ms, label) SELECT sender, message_id, recipient, case_hash, 0, created_ms, expires_ms, "
     "purge_after_ms, label FROM i ORDER BY ord ON CONFLICT (sender, message_id, recipient) DO NOTHING "
     "RETURNING seq, sender, message_id, recipient), "
     "b AS (INSERT INTO bodies (seq, sealed) SELECT m.seq, i.sealed FROM m JOIN i USING (sender, message_id, "
     "recipient)), "
     "d AS (INSERT INTO disclosures (sender, case_hash, recipient) SELECT DISTINCT sender, case_hash, recipient "
     "FROM i ON CONFLICT DO NOTHING) "
     // The seq each new copy got, by its place in the arrays: the core
     // feeds connected receivers from memory instead of reading them back.
     "SELECT m.seq, i.ord FROM m JOIN i USING (sender, message_id, recipient)"},
    // The batch's receipts (the last one of a key, should a batch hold two).
    {"l_put_receipt",
     "INSERT INTO receipts (sender, message_id, receipt, purge_after_ms) "
     "SELECT DISTINCT ON (sender, message_id) sender, message_id, receipt, purge_after_ms "
     "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[]) WITH ORDINALITY "
     "AS t(sender, message_id, receipt, purge_after_ms, ord) ORDER BY sender, message_id, ord DESC "
     "ON CONFLICT (sender, message_id) "
     "DO UPDATE SET receipt = EXCLUDED.receipt, purge_after_ms = EXCLUDED.purge_after_ms"},
    // The batch's acks. The copy itself is no longer needed once delivered.
    //
    // Prepared, and by each copy's primary key whatever tables its generic
    // plan was made on. A plain join of the arrays to messages (as this was)
    // went by messages_by_expiry's "state = 0" in the plan made on young
    // tables, reading every queued copy and the dead version of every acked
    // one until the next ANALYZE (5 ms for 16 acks after 64,000 messages);
    // planned at each batch instead, it cost about 0.25 ms of the server's
    // time a batch. seq = ANY(...) gives every plan the key, the join only
    // pairs each copy with its ack's time and recipient, and
    // "(state = 0) IS TRUE" tests what "state = 0" does in a form no index
    // serves.
    {"l_ack",
     "WITH a AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS t(seq, acked_ms, recipient)), "
     "u AS (UPDATE messages m SET state = 2, acked_ms = a.acked_ms FROM a WHERE m.seq = ANY($1::bigint[]) "
     "AND m.seq = a.seq AND m.recipient = a.recipient AND (m.state = 0) IS TRUE RETURNING m.seq) "
     "DELETE FROM bodies WHERE seq = ANY($1::bigint[]) AND seq IN (SELECT seq FROM u)"},
    // Only a queued copy changes (one acked meanwhile stays acked); a
    // set-aside one keeps its body (a restored key may open it).
    {"l_change_queued",
     "WITH u AS (UPDATE messages SET state = $2::bigint WHERE seq = $1::bigint AND state = 0 RETURNING seq) "
     "DELETE FROM bodies WHERE $2::bigint <> 5 AND seq IN (SELECT seq FROM u)"},
    // An operator's decision on a set-aside copy: a purged one's body goes.
    {"l_change_set_aside",
     "WITH u AS (UPDATE messages SET state = $2::bigint WHERE seq = $1::bigint AND state = 5 RETURNING seq) "
     "DELETE FROM bodies WHERE $2::bigint = 6 AND seq IN (SELECT seq FROM u)"},
    // In the batch's order: a notice's seq is the order it is sent in.
    {"l_add_notices",
     "INSERT INTO notices (agency, receipt) SELECT agency, receipt FROM unnest($1::text[], $2::bytea[]) "
     "WITH ORDINALITY AS t(agency, receipt, ord) ORDER BY ord"},
    {"l_delete_notices", "DELETE FROM notices WHERE seq = ANY($1::bigint[])"},
    // One row per batch (its lines, newline-separated) and the position.
    {"l_append_ledger",
     "WITH t AS (INSERT INTO ledger_tail (seq, first_seq, lines) VALUES ($1::bigint, $2::bigint, $3::text)) "
     "INSERT INTO ledger_position (id, seq) VALUES (1, $1::bigint) "
     "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq"},
    {"l_trim_ledger", "DELETE FROM ledger_tail WHERE seq <= $1::bigint"},
    // Acked, expired, erased and set-aside copies past retention; receipts
    // too. Once a minute, inside a batch: planned each time, so that it goes
    // by the purge indexes (a generic plan made on young tables scanned every
    // table whole, holding up every sender for as long).
    {"l_purge",
     "WITH gone AS (DELETE FROM messages WHERE state <> 0 AND purge_after_ms <= $1::bigint RETURNING seq), "
     "b AS (DELETE FROM bodies WHERE seq IN (SELECT seq FROM gone)), "
     "c AS (DELETE FROM clocks WHERE purge_after_ms <= $1::bigint), "
     "t AS (DELETE FROM threads WHERE purge_after_ms <= $1::bigint), "
     "g AS (DELETE FROM thread_grants WHERE purge_after_ms <= $1::bigint) "
     "DELETE FROM receipts WHERE purge_after_ms <= $1::bigint",
     /*plan_each_time=*/true},
    {"l_find_receipt", "SELECT receipt FROM receipts WHERE sender = $1::text AND message_id = $2::text"},
    // The receipts of many (sender, id) keys at once, by the key's position.
    // Run on the core thread at every drain: a scan here holds up every
    // sender (20-30 ms a lookup at 60,000 receipts, before the LATERAL).
    {"l_find_receipts",
     "SELECT k.ord, r.receipt FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(sender, message_id, ord) "
     "CROSS JOIN LATERAL (SELECT x.receipt FROM receipts x WHERE x.sender = k.sender "
     "AND x.message_id = k.message_id LIMIT 1) AS r"},
    // The next page of receipts' keys after ($1, $2), in the primary key's
    // order (ScanReceiptKeys, as the core loads its receipt filter).
    {"l_receipt_keys",
     "SELECT sender, message_id, purge_after_ms FROM receipts WHERE (sender, message_id) > ($1::text, $2::text) "
     "ORDER BY sender, message_id LIMIT $3::bigint"},
    // A row without its body is damaged like one whose body does not open.
    {"l_pending",
     "SELECT m.seq, m.sender, m.message_id, b.sealed, m.label, m.case_hash, k.epoch, k.wrapped FROM messages m "
     "LEFT JOIN bodies b ON b.seq = m.seq LEFT JOIN case_keys k ON k.sender = m.sender AND k.case_hash = m.case_hash "
     "WHERE m.recipient = $1::text AND m.state = 0 AND m.seq > $2::bigint ORDER BY m.seq LIMIT $3::bigint"},
    {"l_set_aside_now", "UPDATE messages SET state = 5 WHERE seq = $1::bigint AND state = 0"},
    {"l_due",
     "SELECT sender, message_id, recipient, label, seq FROM messages WHERE state = 0 "
     "AND expires_ms <= $1::bigint ORDER BY seq"},
    {"l_queued_of_case",
     "SELECT message_id, recipient, label, seq FROM messages WHERE sender = $1::text "
     "AND case_hash = $2::bytea AND state = 0 ORDER BY seq"},
    {"l_depths", "SELECT recipient, COUNT(*) FROM messages WHERE state = 0 GROUP BY recipient"},
    // Byte order, as SQLite sorts, whatever the database's collation.
    {"l_disclosures",
     "SELECT recipient FROM disclosures WHERE sender = $1::text AND case_hash = $2::bytea "
     "ORDER BY recipient COLLATE \"C\""},
    {"l_notices", "SELECT seq, receipt FROM notices WHERE agency = $1::text ORDER BY seq LIMIT $2::bigint"},
    {"l_ledger_position", "SELECT seq FROM ledger_position WHERE id = 1"},
    {"l_ledger_tail", "SELECT first_seq, lines FROM ledger_tail ORDER BY seq"},
    {"l_summaries",
     "SELECT recipient, COUNT(*) FILTER (WHERE state = 0), "
     "COALESCE(MIN(created_ms) FILTER (WHERE state = 0), 0), COUNT(*) FILTER (WHERE state = 5) "
     "FROM messages WHERE state IN (0, 5) GROUP BY recipient ORDER BY recipient COLLATE \"C\""},
    {"l_entries",
     "SELECT seq, sender, message_id, label, state, created_ms FROM messages WHERE recipient = $1::text "
     "AND state IN (0, 5) ORDER BY seq LIMIT $2::bigint"},
    {"l_set_aside",
     "SELECT sender, message_id, recipient, label, seq FROM messages WHERE recipient = $1::text "
     "AND state = 5 ORDER BY seq"},
    {"l_key_check", "SELECT value FROM meta WHERE name = 'key_check'"},
    {"l_put_key_check", "INSERT INTO meta (name, value) VALUES ('key_check', $1::bytea) ON CONFLICT (name) DO NOTHING"},
    {"l_fence", "SELECT liaison_fence($1::bigint)"},
    // Free, expired, or already this holder's: taken (ttl by the
    // database's clock), always with a new epoch. A broker restarted under
    // the same holder name takes its own unexpired lease at once, and the
    // new epoch fences whatever of its former self may still run (paused,
    // not dead). Renewals go through l_renew_lease.
    //
    // The row is locked FOR UPDATE first, which waits for every batch
    // holding it (liaison_fence, FOR KEY SHARE): the upsert alone would
    // not, as it changes no key. Its expiry is judged after that wait.
    {"l_acquire_lease",
     "WITH held AS (SELECT 1 FROM lease WHERE id = 1 FOR UPDATE) "
     "INSERT INTO lease AS l (id, holder, epoch, expires_at) "
     "SELECT 1, $1::text, 1, clock_timestamp() + $2::bigint * interval '1 millisecond' "
     "FROM (SELECT COUNT(*) FROM held) AS wait "
     "ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, "
     "epoch = l.epoch + 1 "
     "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() RETURNING l.epoch"},
    {"l_renew_lease",
     "UPDATE lease SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond' "
     "WHERE id = 1 AND holder = $1::text AND epoch = $2::bigint AND expires_at > clock_timestamp() RETURNING epoch"},
    // Ends the lease now (a broker stopping cleanly, its last batch
    // committed): the standby's next try takes it, instead of waiting for
    // the lease to run out. Every later batch fails its fence; one in
    // flight may still commit, and the next holder's take waits for it.
    {"l_release_lease",
     "UPDATE lease SET expires_at = clock_timestamp() "
     "WHERE id = 1 AND holder = $1::text AND epoch = $2::bigint AND expires_at > clock_timestamp() RETURNING epoch"},
    {"l_mark_batch",
     "INSERT INTO last_batch (id, token) VALUES (1, $1::text) ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token"},
    // FOR SHARE: waits for a transaction of the lost connection that is
    // still running (or waiting for the synchronous standby) and has written
    // the row, and then reads its outcome.
    {"l_batch_mark", "SELECT token FROM last_batch WHERE id = 1 FOR SHARE"},
    // Case keys (store/case_keys.h): those of a batch's cases, by position.
    {"l_case_keys_of",
     "SELECT k.ord, c.epoch, c.wrapped FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY "
     "AS k(sender, case_hash, ord) CROSS JOIN LATERAL (SELECT x.epoch, x.wrapped FROM case_keys x "
     "WHERE x.sender = k.sender AND x.case_hash = k.case_hash LIMIT 1) AS c"},
    // No ON CONFLICT: a key that landed meanwhile fails the batch (its
    // copies would be sealed under a key the store does not keep).
    {"l_put_case_keys",
     "INSERT INTO case_keys (sender, case_hash, epoch, wrapped) "
     "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[])"},
    {"l_delete_case_keys",
     "DELETE FROM case_keys c USING unnest($1::text[], $2::bytea[]) AS t(sender, case_hash) "
     "WHERE c.sender = t.sender AND c.case_hash = t.case_hash",
     /*plan_each_time=*/true},
    {"l_all_case_keys", "SELECT sender, case_hash, epoch, wrapped FROM case_keys"},
    {"l_rewrap_case_keys",
     "UPDATE case_keys c SET epoch = $3::bigint, wrapped = t.wrapped "
     "FROM unnest($1::text[], $2::bytea[], $4::bytea[]) AS t(sender, case_hash, wrapped) "
     "WHERE c.sender = t.sender AND c.case_hash = t.case_hash",
     /*plan_each_time=*/true},
    {"l_kek_meta", "SELECT name, value FROM meta WHERE name IN ('case_kek_epoch', 'case_kek_check')"},
    {"l_put_kek_meta",
     "INSERT INTO meta (name, value) VALUES ('case_kek_epoch', $1::bytea), ('case_kek_check', $2::bytea) "
     "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"},
    // Retention: the cases of which a purge before $1 leaves no row.
    {"l_unused_case_keys",
     "SELECT k.sender, k.case_hash FROM case_keys k WHERE NOT EXISTS (SELECT 1 FROM messages m "
     "WHERE m.sender = k.sender AND m.case_hash = k.case_hash AND (m.state = 0 OR m.purge_after_ms > $1::bigint))",
     /*plan_each_time=*/true},
    // A batch's clocks, one statement each (as the copies). A clock already
    // running for a copy keeps its start.
    {"l_start_clocks",
     "INSERT INTO clocks (sender, message_id, recipient, label, urgency, started_ms, due_ms, purge_after_ms) "
     "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], "
     "$7::bigint[], $8::bigint[]) ON CONFLICT (sender, message_id, recipient) DO NOTHING"},
    {"l_answer_clocks",
     "UPDATE clocks c SET answered_ms = a.at_ms FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
     "AS a(sender, message_id, recipient, at_ms) WHERE c.sender = a.sender AND c.message_id = a.message_id "
     "AND c.recipient = a.recipient AND c.answered_ms IS NULL"},
    // Fires once: neither fired nor answered before (in this batch too:
    // the answers run first).
    {"l_fire_clocks",
     "UPDATE clocks c SET fired_ms = a.at_ms FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
     "AS a(sender, message_id, recipient, at_ms) WHERE c.sender = a.sender AND c.message_id = a.message_id "
     "AND c.recipient = a.recipient AND c.fired_ms IS NULL AND c.answered_ms IS NULL"},
    {"l_due_clocks",
     "SELECT sender, message_id, recipient, label, urgency, started_ms, due_ms FROM clocks "
     "WHERE fired_ms IS NULL AND answered_ms IS NULL AND due_ms <= $1::bigint "
     "ORDER BY due_ms, sender COLLATE \"C\", message_id COLLATE \"C\", recipient COLLATE \"C\" LIMIT $2::bigint"},
    {"l_oldest_clock", "SELECT MIN(started_ms) FROM clocks WHERE answered_ms IS NULL"},
    // A withdrawn case's clocks (erasures are rare: one statement each).
    {"l_withdraw_clocks",
     "DELETE FROM clocks WHERE sender = $1 AND left(label, length($2) + 1) = $2 || '|'"},
    // A reference is random (128 bits): one seen before keeps its first row.
    {"l_start_threads",
     "INSERT INTO threads (ref, holder, root, origin, handling, purpose, circle, onward, purge_after_ms, message_id) "
     "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], "
     "$8::text[], $9::bigint[], $10::text[]) ON CONFLICT (ref) DO NOTHING"},
    // Granted twice: kept as long as the later grant is.
    {"l_add_grants",
     "INSERT INTO thread_grants (root, grantee, purge_after_ms) "
     "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT (root, grantee) DO UPDATE SET "
     "purge_after_ms = GREATEST(thread_grants.purge_after_ms, EXCLUDED.purge_after_ms)"},
    // Threads by reference (FindThread asks for one), by the reference's
    // position: a row per grant of the thread's root (one with a null
    // grantee if it has none), by grantee. OFFSET 0 keeps each grants read
    // a lookup by root (see plan_each_time).
    {"l_find_threads",
     "SELECT k.ord, t.holder, t.root, t.origin, t.handling, t.purpose, t.circle, t.onward, t.message_id, g.grantee "
     "FROM unnest($1::text[]) WITH ORDINALITY AS k(ref, ord) "
     "CROSS JOIN LATERAL (SELECT x.holder, x.root, x.origin, x.handling, x.purpose, x.circle, x.onward, x.message_id "
     "FROM threads x WHERE x.ref = k.ref LIMIT 1) AS t "
     "LEFT JOIN LATERAL (SELECT y.grantee FROM thread_grants y WHERE y.root = t.root OFFSET 0) AS g ON true "
     "ORDER BY k.ord, g.grantee"},
};

using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

Result Wrap(PGresult* r) { return Result(r, &PQclear); }

// What the server said, without DETAIL (which can quote row values).
std::string ServerError(const PGresult* r, pg_conn* conn) {
  const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string text = primary ? primary : PQerrorMessage(conn);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (state) text += std::string(" (SQLSTATE ") + state + ")";
  return text;
}

// Column readers of a binary-format result. NULL reads as 0 / empty, as
// SQLite's column functions do.
int64_t GetInt(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r, row, col));
  const int n = PQgetlength(r, row, col);
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  if (n == 4) return static_cast<int32_t>(static_cast<uint32_t>(v));
  if (n == 2) return static_cast<int16_t>(static_cast<uint16_t>(v));
  return static_cast<int64_t>(v);
}

std::string GetText(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::string();
  return std::string(PQgetvalue(r, row, col), PQgetlength(r, row, col));
}

std::vector<uint8_t> GetBytes(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return {};
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r, row, col));
  return std::vector<uint8_t>(p, p + PQgetlength(r, row, col));
}

}  // namespace

class PgStore::Params {
 public:
  Params& Text(const std::string& v) { return Add(v); }
  Params& Bytes(const void* data, size_t size) { return Add(std::string(static_cast<const char*>(data), size)); }
  Params& Bytes(const std::vector<uint8_t>& v) { return Bytes(v.data(), v.size()); }
  Params& Bytes(const std::string& v) { return Add(v); }
  // SQL NULL (an optional column of a migrated row).
  Params& Null() {
    values_.emplace_back();
    nulls_.resize(values_.size());
    nulls_.back() = true;
    return *this;
  }
  Params& Int(int64_t v) {
    std::string be(8, '\0');
    for (int i = 7; i >= 0; --i, v = static_cast<int64_t>(static_cast<uint64_t>(v) >> 8)) {
      be[i] = static_cast<char>(v & 0xff);
    }
    return Add(std::move(be));
  }
  // A one-dimensional array in PostgreSQL's binary form (what array_recv
  // reads): dimensions, no NULLs, the element type's OID, one dimension of
  // `Array::count` from 1, then each element as its length and bytes.
  class Array {
   public:
    explicit Array(uint32_t element_oid) : oid_(element_oid) {}
    Array& Add(const void* data, size_t size) {
      Put32(static_cast<uint32_t>(size));
      body_.append(static_cast<const char*>(data), size);
      ++count_;
      largest_ = std::max(largest_, size);
      return *this;
    }
    Array& Add(const std::string& v) { return Add(v.data(), v.size()); }
    Array& Add(const std::vector<uint8_t>& v) { return Add(v.data(), v.size()); }
    Array& Add(int64_t v) {
      char be[8];
      for (int i = 7; i >= 0; --i, v = static_cast<int64_t>(static_cast<uint64_t>(v) >> 8)) {
        be[i] = static_cast<char>(v & 0xff);
      }
      return Add(be, sizeof be);
    }
    // The largest element: what a store limiting its values refuses.
    size_t largest() const { return largest_; }
    std::string Take() {
      std::string out;
      out.reserve(20 + body_.size());
      auto put = [&out](uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
      };
      put(1);  // dimensions
      put(0);  // no NULLs
      put(oid_);
      put(count_);
      put(1);  // lower bound
      return out + body_;
    }

   private:
    void Put32(uint32_t v) {
      for (int shift = 24; shift >= 0; shift -= 8) body_.push_back(static_cast<char>((v >> shift) & 0xff));
    }
    uint32_t oid_;
    uint32_t count_ = 0;
    size_t largest_ = 0;
    std::string body_;
  };
  // The element types' OIDs (pg_type.h; fixed since PostgreSQL 7).
  static constexpr uint32_t kText = 25, kBytea = 17, kInt8 = 20;
  Params& Add(Array array) {
    largest_ = std::max(largest_, array.largest());
    values_.push_back(array.Take());
    return *this;
  }

  int size() const { return static_cast<int>(values_.size()); }
  // The largest value, or array element, of the call.
  size_t largest() const {
    return largest_;
  }
  // libpq's arrays; valid while this object is unchanged.
  void Arrays(std::vector<const char*>* values, std::vector<int>* lengths, std::vector<int>* formats) const {
    for (size_t i = 0; i < values_.size(); ++i) {
      const std::string& v = values_[i];
      values->push_back(i < nulls_.size() && nulls_[i] ? nullptr : v.data());
      lengths->push_back(static_cast<int>(v.size()));
      formats->push_back(1);
    }
  }

 private:
  Params& Add(std::string v) {
    largest_ = std::max(largest_, v.size());
    values_.push_back(std::move(v));
    return *this;
  }
  std::vector<std::string> values_;
  size_t largest_ = 0;
  std::vector<bool> nulls_;  // by index; shorter than values_ when the last ones are not NULL
};

struct PgStore::Call {
  Stmt stmt;
  Params params;
  const char* what;  // for the error: what was being written
  size_t first_copy = 0;  // kEnqueue: the batch's index of its first copy
};

namespace {

// Runs a statement outside a pipeline (prepared, or planned now if it is
// planned at each use); results in binary.
Result Exec(pg_conn* conn, Stmt stmt, const PgStore::Params& params) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  params.Arrays(&values, &lengths, &formats);
  if (kStatements[stmt].plan_each_time) {
    return Wrap(PQexecParams(conn, kStatements[stmt].sql, params.size(), nullptr, values.data(), lengths.data(),
                             formats.data(), /*resultFormat=*/1));
  }
  return Wrap(PQexecPrepared(conn, kStatements[stmt].name, params.size(), values.data(), lengths.data(),
                             formats.data(), /*resultFormat=*/1));
}

bool Succeeded(const Result& r) {
  const ExecStatusType s = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

Status TooNew(const std::string& where, int version) {
  return Status::InvalidArgument("store " + where + ": the database has schema version " + std::to_string(version) +
                                 ", newer than this broker's (" + std::to_string(PgStore::kSchemaVersion) +
                                 "): run the broker version that wrote it, or a newer one; this one does not "
                                 "downgrade it");
}

}  // namespace

std::string MaskPassword(std::string text, const PgConnectOptions& options) {
  // The passwords to hide: the password file's and one written in the URL.
  std::vector<std::string> secrets;
  if (!options.password.empty()) secrets.push_back(options.password);
  char* error = nullptr;
  if (PQconninfoOption* parsed = PQconninfoParse(options.url.c_str(), &error)) {
    for (PQconninfoOption* o = parsed; o->keyword; ++o) {
      if (std::strcmp(o->keyword, "password") == 0 && o->val && *o->val) secrets.emplace_back(o->val);
    }
    PQconninfoFree(parsed);
  } else if (error) {
    PQfreemem(error);
  }
  for (const std::string& secret : secrets) {
    for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
      text.replace(at, secret.size(), "***");
    }
  }
  return text;
}

std::string DescribePgUrl(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (!options) {
    if (error) PQfreemem(error);
    return "postgresql (an unreadable url)";
  }
  std::string host, port, dbname;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (!o->val) continue;
    if (std::strcmp(o->keyword, "host") == 0 || (host.empty() && std::strcmp(o->keyword, "hostaddr") == 0)) {
      host = o->val;
    }
    if (std::strcmp(o->keyword, "port") == 0) port = o->val;
    if (std::strcmp(o->keyword, "dbname") == 0) dbname = o->val;
  }
  PQconninfoFree(options);
  return "postgresql host=" + (host.empty() ? std::string("(default)") : host) +
         " port=" + (port.empty() ? std::string("5432") : port) +
         " dbname=" + (dbname.empty() ? std::string("(default)") : dbname);
}

StatusOr<std::unique_ptr<PgStore>> PgStore::Open(const PgConnectOptions& options, const StoreKey& key,
                                                 size_t max_value_bytes, std::shared_ptr<CaseKeyRing> ring) {
  std::unique_ptr<PgStore> store(new PgStore());
  store->ring_ = std::move(ring);
  store->options_ = options;
  store->where_ = DescribePgUrl(options.url);
  store->key_ = key;
  store->max_value_bytes_ = max_value_bytes;
  LIAISON_RETURN_IF_ERROR(store->Connect());
  LIAISON_RETURN_IF_ERROR(store->Migrate());
  LIAISON_RETURN_IF_ERROR(store->PrepareAll());
  LIAISON_RETURN_IF_ERROR(store->CheckKey());
  if (store->ring_) {
    auto meta = store->ReadKekMeta();
    if (!meta.ok()) return meta.status();
    LIAISON_RETURN_IF_ERROR(CheckRing(*store->ring_, store->where_, *meta));
  }
  return store;
}

StatusOr<int> PgStore::ProbeSchemaVersion(const PgConnectOptions& options) {
  PgStore probe;
  probe.options_ = options;
  probe.where_ = DescribePgUrl(options.url);
  LIAISON_RETURN_IF_ERROR(probe.Connect());
  Result exists = Wrap(PQexec(probe.conn_, "SELECT to_regclass('schema_version') IS NOT NULL"));
  if (!Succeeded(exists) || PQntuples(exists.get()) != 1) {
    return Status::IoError("store " + probe.where_ + ": reading the schema: " + ServerError(exists.get(), probe.conn_));
  }
  if (GetText(exists.get(), 0, 0) != "t") return 0;
  Result v = Wrap(PQexec(probe.conn_, "SELECT COALESCE(MAX(version), 0) FROM schema_version"));
  if (!Succeeded(v) || PQntuples(v.get()) != 1) {
    return Status::IoError("store " + probe.where_ + ": reading schema_version: " + ServerError(v.get(), probe.conn_));
  }
  const int version = std::atoi(PQgetvalue(v.get(), 0, 0));
  if (version > kSchemaVersion) return TooNew(probe.where_, version);
  return version;
}

StatusOr<std::optional<int64_t>> PgStore::AcquireLease(const std::string& holder, int64_t ttl_ms) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kAcquireLease, Params().Text(holder).Int(ttl_ms));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": taking the lease: " + ServerError(r.get(), conn_));
  if (PQntuples(r.get()) == 0) return std::optional<int64_t>();
  return std::optional<int64_t>(GetInt(r.get(), 0, 0));
}

StatusOr<bool> PgStore::RenewLease(const std::string& holder, int64_t epoch, int64_t ttl_ms) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kRenewLease, Params().Text(holder).Int(epoch).Int(ttl_ms));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": renewing the lease: " + ServerError(r.get(), conn_));
  return PQntuples(r.get()) == 1;
}

StatusOr<bool> PgStore::ReleaseLease(const std::string& holder, int64_t epoch) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kReleaseLease, Params().Text(holder).Int(epoch));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": releasing the lease: " + ServerError(r.get(), conn_));
  }
  return PQntuples(r.get()) == 1;
}

const char* PgStore::StatementSql(const std::string& name, bool* planned_each_time) {
  for (const StatementText& statement : kStatements) {
    if (name != statement.name) continue;
    if (planned_each_time) *planned_each_time = statement.plan_each_time;
    return statement.sql;
  }
  return nullptr;
}

PgStore::~PgStore() {
  if (conn_) PQfinish(conn_);
}

Status PgStore::SetSessionTimeouts(int64_t lock_timeout_ms, int64_t idle_in_transaction_ms) {
  lock_timeout_ms_ = lock_timeout_ms;
  idle_in_transaction_ms_ = idle_in_transaction_ms;
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  return ApplySessionTimeouts();
}

Status PgStore::ApplySessionTimeouts() {
  for (const auto& [name, ms] : {std::pair<const char*, int64_t>{"lock_timeout", lock_timeout_ms_},
                                 {"idle_in_transaction_session_timeout", idle_in_transaction_ms_}}) {
    if (ms <= 0) continue;
    const std::string sql = std::string("SET ") + name + " = " + std::to_string(ms);
    Result set = Wrap(PQexec(conn_, sql.c_str()));
    if (!Succeeded(set)) return Status::IoError("store " + where_ + ": " + ServerError(set.get(), conn_));
  }
  return Status::Ok();
}

Status PgStore::Connect() {
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  // The URL's own settings win over the defaults before it; the password
  // file's password wins over one in the URL.
  // A server that vanishes without closing the connection (a power cut, a
  // network split) must fail the batch waiting on it within seconds, not
  // after the kernel's default of hours: TCP keepalives, and a limit on
  // how long sent data may stay unacknowledged.
  std::vector<const char*> keywords = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                                       "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname"};
  std::vector<const char*> values = {"10", "liaison-broker", "1", "5", "2", "3", "15000", options_.url.c_str()};
  if (!options_.password.empty()) {
    keywords.push_back("password");
    values.push_back(options_.password.c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1);
  if (!conn_) return Status::Unavailable("store " + where_ + ": cannot connect (out of memory)");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = MaskPassword(PQerrorMessage(conn_), options_);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    return Status::Unavailable("store " + where_ + ": cannot connect: " + message +
                               " (check store.url, store.password_file and that the database runs)");
  }
  // The server's notices (e.g. "relation ... already exists, skipping" of
  // the migration) would go to stderr by default, outside the broker's
  // structured log; none of them is something an operator must act on.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  // A commit is an acknowledgement: it must not return before it is
  // durable, whatever the server's default (on, or remote_apply, stay).
  // `local` and `remote_write` are raised too: with a synchronous standby
  // they return before the standby has the commit on disk, so a failover
  // to it could lose a message already answered `stored`.
  Result sync = Wrap(PQexec(conn_, "SHOW synchronous_commit"));
  if (!Succeeded(sync)) return Status::IoError("store " + where_ + ": " + ServerError(sync.get(), conn_));
  const std::string level = PQntuples(sync.get()) == 1 ? GetText(sync.get(), 0, 0) : std::string();
  if (level != "on" && level != "remote_apply") {
    Result set = Wrap(PQexec(conn_, "SET synchronous_commit = on"));
    if (!Succeeded(set)) return Status::IoError("store " + where_ + ": " + ServerError(set.get(), conn_));
  }
  return ApplySessionTimeouts();
}

Status PgStore::EnsureConnected() {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) return Status::Ok();
  spdlog::warn("event=store_reconnect store=\"{}\"", where_);
  LIAISON_RETURN_IF_ERROR(Connect());
  // Prepared statements belong to the connection: prepare them again.
  return PrepareAll();
}

Status PgStore::PrepareAll() {
  for (int i = 0; i < kStmtCount; ++i) {
    Result r = Wrap(PQprepare(conn_, kStatements[i].name, kStatements[i].sql, 0, nullptr));
    if (!Succeeded(r)) {
      return Status::IoError("store " + where_ + ": preparing " + kStatements[i].name + ": " +
                             ServerError(r.get(), conn_));
    }
  }
  return Status::Ok();
}

Status PgStore::Migrate() {
  auto exec = [this](const char* sql) -> Status {
    Result r = Wrap(PQexec(conn_, sql));
    if (Succeeded(r)) return Status::Ok();
    return Status::IoError("store " + where_ + ": creating the schema: " + ServerError(r.get(), conn_));
  };
  auto run = [&]() -> Status {
    LIAISON_RETURN_IF_ERROR(exec("BEGIN"));
    LIAISON_RETURN_IF_ERROR(exec(kMigrationLock));
    LIAISON_RETURN_IF_ERROR(exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
    Result v = Wrap(PQexec(conn_, "SELECT COALESCE(MAX(version), 0) FROM schema_version"));
    if (!Succeeded(v) || PQntuples(v.get()) != 1) {
      return Status::IoError("store " + where_ + ": reading schema_version: " + ServerError(v.get(), conn_));
    }
    const int version = std::atoi(PQgetvalue(v.get(), 0, 0));
    if (version > kSchemaVersion) return TooNew(where_, version);
    // One row per step taken, so the table is also the history.
    if (version < 1) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV1));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (1)"));
    }
    if (version < 2) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV2));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (2)"));
    }
    if (version < 3) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV3));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (3)"));
    }
    if (version < 4) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV4));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (4)"));
    }
    if (version < 5) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV5));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (5)"));
    }
    if (version < 6) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV6));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (6)"));
    }
    if (version < 7) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV7));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (7)"));
    }
    if (version < 8) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV8));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (8)"));
    }
    if (version < 9) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV9));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (9)"));
    }
    if (version < 10) {
      LIAISON_RETURN_IF_ERROR(exec(kSchemaV10));
      LIAISON_RETURN_IF_ERROR(exec("INSERT INTO schema_version (version) VALUES (10)"));
    }
    LIAISON_RETURN_IF_ERROR(exec("COMMIT"));
    if (version == 0) {
      spdlog::info("event=store_schema_created store=\"{}\" version={}", where_, kSchemaVersion);
    } else if (version < kSchemaVersion) {
      spdlog::info("event=store_schema_migrated store=\"{}\" from={} to={}", where_, version, kSchemaVersion);
    }
    return Status::Ok();
  };
  Status st = run();
  if (!st.ok()) Wrap(PQexec(conn_, "ROLLBACK"));  // nothing of a failed migration stays
  return st;
}

Status PgStore::CheckKey() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result r = Exec(conn_, kKeyCheck, Params());
    if (!Succeeded(r)) {
      return Status::IoError("store " + where_ + ": reading the key check: " + ServerError(r.get(), conn_));
    }
    if (PQntuples(r.get()) == 1) {
      if (!KeyCheckOpens(key_, GetBytes(r.get(), 0, 0))) {
        return Status::PermissionDenied("store " + where_ +
                                        ": the store key does not match this database (wrong key file?)");
      }
      return Status::Ok();
    }
    // A new database: seal the check; another broker may do so at once,
    // so the one that landed is read back.
    auto sealed = SealKeyCheck(key_);
    if (!sealed) return Status::Internal("store " + where_ + ": cannot encrypt (OpenSSL AES-256-GCM failed)");
    Result put = Exec(conn_, kPutKeyCheck, Params().Bytes(*sealed));
    if (!Succeeded(put)) {
      return Status::IoError("store " + where_ + ": writing the key check: " + ServerError(put.get(), conn_));
    }
  }
  return Status::Internal("store " + where_ + ": the key check does not stay written");
}

StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> PgStore::ReadKekMeta() {
  using Out = std::optional<std::pair<uint64_t, std::vector<uint8_t>>>;
  Result r = Exec(conn_, kKekMeta, Params());
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading the case-key epoch: " + ServerError(r.get(), conn_));
  }
  std::optional<uint64_t> epoch;
  std::vector<uint8_t> check;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    if (GetText(r.get(), row, 0) == "case_kek_epoch") {
      epoch = std::strtoull(GetText(r.get(), row, 1).c_str(), nullptr, 10);
    } else {
      check = GetBytes(r.get(), row, 1);
    }
  }
  if (!epoch) return Out();
  return Out(std::make_pair(*epoch, std::move(check)));
}

namespace {

PgStore::Params KekMetaParams(uint64_t epoch, const SecretKey32& kek, bool* ok);

}  // namespace

Status PgStore::SettleRing() {
  if (!ring_ || ring_settled_) return Status::Ok();
  auto meta = ReadKekMeta();
  if (!meta.ok()) return meta.status();
  const uint64_t ring_epoch = ring_->epoch();
  if (*meta && (ring_->Kek((*meta)->first) || ring_epoch <= (*meta)->first)) {
    LIAISON_RETURN_IF_ERROR(ring_->Settle((*meta)->first));
    ring_settled_ = true;
    return Status::Ok();
  }
  auto kek = ring_->Kek(ring_epoch);
  if (!kek) return Status::Internal("case-key ring " + ring_->path() + ": holds no KEK of its own epoch");
  std::vector<Call> calls;
  if (*meta) {
    // A restored backup under a destroyed epoch: as SqliteStore::AdoptRing.
    Result all = Exec(conn_, kAllCaseKeys, Params());
    if (!Succeeded(all)) {
      return Status::IoError("store " + where_ + ": reading the case keys: " + ServerError(all.get(), conn_));
    }
    Params::Array ks(Params::kText), kh(Params::kBytea), kw(Params::kBytea), ds(Params::kText), dh(Params::kBytea);
    int64_t kept = 0, shredded = 0;
    for (int row = 0; row < PQntuples(all.get()); ++row) {
      const std::string sender = GetText(all.get(), row, 0);
      const std::vector<uint8_t> hash = GetBytes(all.get(), row, 1);
      const std::string case_hash(hash.begin(), hash.end());
      auto snap = ring_->Snapshot(sender, case_hash);
      if (snap && snap->first == ring_epoch) {
        ks.Add(sender);
        kh.Add(case_hash);
        kw.Add(snap->second);
        ++kept;
      } else {
        ds.Add(sender);
        dh.Add(case_hash);
        ++shredded;
      }
    }
    calls.push_back({kRewrapCaseKeys,
                     Params().Add(std::move(ks)).Add(std::move(kh)).Int(static_cast<int64_t>(ring_epoch)).Add(std::move(kw)),
                     "adopting the case keys"});
    calls.push_back({kDeleteCaseKeys, Params().Add(std::move(ds)).Add(std::move(dh)), "adopting the case keys"});
    spdlog::warn("event=case_keys_adopted store_epoch={} ring_epoch={} cases_kept={} cases_shredded_since={}",
                 (*meta)->first, ring_epoch, kept, shredded);
  }
  bool ok = false;
  Params meta_params = KekMetaParams(ring_epoch, *kek, &ok);
  if (!ok) return Status::Internal("store: cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
  calls.push_back({kPutKekMeta, std::move(meta_params), "writing the case-key epoch"});
  LIAISON_RETURN_IF_ERROR(RunPipeline(calls));
  ring_settled_ = true;
  return Status::Ok();
}

void PgStore::ForgetKnownCaseKeys() {
  known_keys_.clear();
  known_fence_ = fence_epoch_;
  known_ring_epoch_ = ring_ ? ring_->epoch() : 0;
}

void PgStore::RememberCaseKeys(const std::map<std::string, CaseKey>& keys) {
  // Bounded: past the limit it starts again (one read per case, as before).
  constexpr size_t kMaxKnownCaseKeys = 100000;
  if (known_keys_.size() + keys.size() > kMaxKnownCaseKeys) known_keys_.clear();
  for (const auto& [id, key] : keys) known_keys_.insert_or_assign(id, key);
}

StatusOr<PgStore::CaseKeyPlan> PgStore::PlanCaseKeys(const WriteBatch& batch) {
  CaseKeyPlan plan;
  if (!ring_) return plan;
  LIAISON_RETURN_IF_ERROR(SettleRing());
  // The cases of the batch's case-keyed copies, and those it shreds.
  std::map<std::string, std::pair<std::string, std::string>> cases;  // id -> (sender, hash)
  for (const WriteBatch::Copy& c : batch.copies) {
    if (!c.case_keyed) continue;
    const std::string h = CaseHash(key_, c.sender, c.case_ref);
    cases.emplace(c.sender + '\0' + h, std::make_pair(c.sender, h));
  }
  std::set<std::string> shred;
  for (const WriteBatch::Shred& x : batch.shred) {
    const std::string h = CaseHash(key_, x.sender, x.case_ref);
    shred.insert(x.sender + '\0' + h);
    cases.emplace(x.sender + '\0' + h, std::make_pair(x.sender, h));
  }
  std::vector<std::string> ids;
  std::set<std::string> existing;
  // Keys this writer committed before need no read (see known_keys_); a
  // batch that deletes keys (a shredding, a purge) reads them all.
  if (known_fence_ != fence_epoch_ || known_ring_epoch_ != ring_->epoch()) ForgetKnownCaseKeys();
  if (shred.empty() && batch.purge_before_ms <= 0) {
    for (const auto& [id, sh] : cases) {
      if (auto k = known_keys_.find(id); k != known_keys_.end()) {
        existing.insert(id);
        plan.keys[id] = k->second;
      }
    }
  }
  if (existing.size() < cases.size()) {
    Params::Array senders(Params::kText), hashes(Params::kBytea);
    for (const auto& [id, sh] : cases) {
      if (existing.count(id)) continue;
      ids.push_back(id);
      senders.Add(sh.first);
      hashes.Add(sh.second);
    }
    Result r = Exec(conn_, kCaseKeysOf, Params().Add(std::move(senders)).Add(std::move(hashes)));
    if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading case keys: " + ServerError(r.get(), conn_));
    for (int row = 0; row < PQntuples(r.get()); ++row) {
      const std::string& id = ids.at(static_cast<size_t>(GetInt(r.get(), row, 0) - 1));
      const auto& [sender, hash] = cases.at(id);
      const uint64_t epoch = static_cast<uint64_t>(GetInt(r.get(), row, 1));
      auto kek = ring_->Kek(epoch);
      auto key = kek ? UnwrapCaseKey(*kek, sender, hash, epoch, GetBytes(r.get(), row, 2)) : std::nullopt;
      if (!key) {
        return Status::PermissionDenied("store " + where_ + ": a case key does not open under the case-key ring " +
                                        ring_->path() + " (epoch " + std::to_string(epoch) +
                                        "): configure this store's ring");
      }
      existing.insert(id);
      plan.keys[id] = *key;
    }
  }
  for (const auto& [id, sh] : cases) {
    if (existing.count(id) || shred.count(id)) continue;
    plan.keys[id] = RandomSecretKey32();
    plan.added.push_back(sh);
  }
  for (const std::string& id : shred) {
    if (existing.count(id)) plan.deleted.push_back(cases.at(id));
  }
  if (batch.purge_before_ms > 0) {
    Result r = Exec(conn_, kUnusedCaseKeys, Params().Int(batch.purge_before_ms));
    if (!Succeeded(r)) {
      return Status::IoError("store " + where_ + ": finding purged cases' keys: " + ServerError(r.get(), conn_));
    }
    for (int row = 0; row < PQntuples(r.get()); ++row) {
      const std::string sender = GetText(r.get(), row, 0);
      const std::vector<uint8_t> hash = GetBytes(r.get(), row, 1);
      const std::string h(hash.begin(), hash.end());
      // A case this batch queues a copy of keeps its key.
      if (cases.count(sender + '\0' + h) && !shred.count(sender + '\0' + h)) continue;
      if (shred.count(sender + '\0' + h)) continue;  // deleted above
      plan.deleted.emplace_back(sender, h);
    }
  }
  uint64_t epoch = ring_->epoch();
  std::optional<SecretKey32> kek = ring_->Kek(epoch);
  if (!plan.deleted.empty()) {
    // A rotation: every key that stays, re-wrapped under a new KEK.
    std::set<std::string> gone;
    for (const auto& [sender, hash] : plan.deleted) gone.insert(sender + '\0' + hash);
    std::map<std::string, CaseKey> keep;
    Result all = Exec(conn_, kAllCaseKeys, Params());
    if (!Succeeded(all)) {
      return Status::IoError("store " + where_ + ": reading the case keys: " + ServerError(all.get(), conn_));
    }
    for (int row = 0; row < PQntuples(all.get()); ++row) {
      const std::string sender = GetText(all.get(), row, 0);
      const std::vector<uint8_t> hash = GetBytes(all.get(), row, 1);
      const std::string h(hash.begin(), hash.end());
      if (gone.count(sender + '\0' + h)) continue;
      const uint64_t e = static_cast<uint64_t>(GetInt(all.get(), row, 2));
      auto k = ring_->Kek(e);
      auto key = k ? UnwrapCaseKey(*k, sender, h, e, GetBytes(all.get(), row, 3)) : std::nullopt;
      if (!key) {
        return Status::PermissionDenied("store " + where_ + ": a case key does not open under the case-key ring " +
                                        ring_->path() + ": configure this store's ring");
      }
      keep[sender + '\0' + h] = *key;
    }
    for (const auto& [sender, hash] : plan.added) keep[sender + '\0' + hash] = plan.keys.at(sender + '\0' + hash);
    auto staged = ring_->Stage(keep);
    if (!staged.ok()) return staged.status();
    plan.staged = std::move(*staged);
    return plan;
  }
  if (!kek) return Status::Internal("case-key ring " + ring_->path() + ": holds no KEK of its own epoch");
  for (const auto& [sender, hash] : plan.added) {
    auto wrapped = WrapCaseKey(*kek, sender, hash, epoch, plan.keys.at(sender + '\0' + hash));
    if (!wrapped) return Status::Internal("store: cannot wrap a case key (OpenSSL AES-256-GCM failed)");
    plan.added_wrapped[sender + '\0' + hash] = std::move(*wrapped);
  }
  return plan;
}

namespace {

PgStore::Params KekMetaParams(uint64_t epoch, const SecretKey32& kek, bool* ok) {
  auto check = SealKekCheck(kek, epoch);
  *ok = check.has_value();
  PgStore::Params p;
  p.Bytes(std::to_string(epoch));
  if (check) p.Bytes(*check);
  return p;
}

}  // namespace

Status PgStore::BuildBatch(const WriteBatch& batch, const std::string& token, const CaseKeyPlan& plan,
                           std::vector<Call>* calls) const {
  if (fence_epoch_ > 0) calls->push_back({kFence, Params().Int(fence_epoch_), "checking the lease"});
  calls->push_back({kMarkBatch, Params().Text(token), "marking the batch"});
  // New case keys before the copies sealed under them.
  if (!plan.added.empty()) {
    Params::Array s(Params::kText), h(Params::kBytea), e(Params::kInt8), w(Params::kBytea);
    for (const auto& [sender, hash] : plan.added) {
      const std::string id = sender + '\0' + hash;
      s.Add(sender);
      h.Add(hash);
      if (plan.staged) {
        e.Add(static_cast<int64_t>(plan.staged->epoch));
        w.Add(plan.staged->wrapped.at(id));
      } else {
        e.Add(static_cast<int64_t>(ring_->epoch()));
        w.Add(plan.added_wrapped.at(id));
      }
    }
    calls->push_back({kPutCaseKeys, Params().Add(std::move(s)).Add(std::move(h)).Add(std::move(e)).Add(std::move(w)),
                      "writing case keys"});
  }
  // One statement each for the copies, the receipts and the acks, however
  // many the batch holds: the server's cost per statement, not per row,
  // is what a batch of small rows pays most for.
  // A statement's parameters travel in one protocol message, which the
  // server refuses past 1 GB: the copies go in parts of about 64 MiB of
  // sealed bytes, in order (the queue's order is the calls' order).
  constexpr size_t kPartBytes = size_t{64} << 20;
  for (size_t first = 0; first < batch.copies.size();) {
    const size_t part_first = first;
    using A = Params::Array;
    A sender(Params::kText), id(Params::kText), recipient(Params::kText), case_hash(Params::kBytea),
        created(Params::kInt8), expires(Params::kInt8), purge(Params::kInt8), label(Params::kText),
        sealed(Params::kBytea);
    size_t part_bytes = 0;
    for (; first < batch.copies.size() && part_bytes < kPartBytes; ++first) {
      const WriteBatch::Copy& c = batch.copies[first];
      const std::string h = CaseHash(key_, c.sender, c.case_ref);
      std::optional<std::vector<uint8_t>> body;
      if (ring_ && c.case_keyed) {
        auto k = plan.keys.find(c.sender + '\0' + h);
        if (k == plan.keys.end()) return Status::Internal("store: a copy's case has no key in its batch's plan");
        body = Seal(k->second, CaseCopyAad(c.sender, c.message_id, c.recipient), c.envelope.data(), c.envelope.size());
      } else {
        body = Seal(key_, CopyAad(c.sender, c.message_id, c.recipient), c.envelope.data(), c.envelope.size());
      }
      if (!body) {
        return Status::Internal(
            "store: cannot encrypt the message (OpenSSL AES-256-GCM or its random source failed)");
      }
      part_bytes += body->size() + c.label.size() + c.sender.size() + c.message_id.size() + c.recipient.size();
      sender.Add(c.sender);
      id.Add(c.message_id);
      recipient.Add(c.recipient);
      case_hash.Add(h);
      created.Add(c.now_ms);
      expires.Add(c.expires_ms);
      purge.Add(c.purge_after_ms);
      label.Add(c.label);
      sealed.Add(*body);
    }
    Params p;
    for (A* a : {&sender, &id, &recipient, &case_hash, &created, &expires, &purge, &label, &sealed}) {
      p.Add(std::move(*a));
    }
    calls->push_back({kEnqueue, std::move(p), "queueing messages", part_first});
  }
  if (!batch.receipts.empty()) {
    Params::Array sender(Params::kText), id(Params::kText), receipt(Params::kBytea), purge(Params::kInt8);
    for (const WriteBatch::Receipt& r : batch.receipts) {
      sender.Add(r.sender);
      id.Add(r.message_id);
      receipt.Add(r.receipt);
      purge.Add(r.purge_after_ms);
    }
    calls->push_back({kPutReceipt,
                      Params().Add(std::move(sender)).Add(std::move(id)).Add(std::move(receipt)).Add(std::move(purge)),
                      "writing receipts"});
  }
  if (!batch.acks.empty()) {
    Params::Array seq(Params::kInt8), at(Params::kInt8), recipient(Params::kText);
    for (const WriteBatch::Acked& a : batch.acks) {
      seq.Add(a.seq);
      at.Add(a.now_ms);
      recipient.Add(a.recipient);
    }
    calls->push_back({kAck, Params().Add(std::move(seq)).Add(std::move(at)).Add(std::move(recipient)),
                      "recording acks"});
  }
  for (const auto& [state, seqs] : {std::pair<int, const std::vector<int64_t>*>{3, &batch.expired},
                                    {4, &batch.erased}, {5, &batch.set_aside}}) {
    for (int64_t seq : *seqs) {
      calls->push_back({kChangeQueued, Params().Int(seq).Int(state), "updating a queued message"});
    }
  }
  for (const auto& [state, seqs] : {std::pair<int, const std::vector<int64_t>*>{6, &batch.purged},
                                    {0, &batch.requeued}}) {
    for (int64_t seq : *seqs) {
      calls->push_back({kChangeSetAside, Params().Int(seq).Int(state), "changing a set-aside message"});
    }
  }
  if (!batch.clocks_started.empty()) {
    using A = Params::Array;
    A sender(Params::kText), id(Params::kText), recipient(Params::kText), label(Params::kText),
        urgency(Params::kInt8), started(Params::kInt8), due(Params::kInt8), purge(Params::kInt8);
    for (const WriteBatch::ClockStart& c : batch.clocks_started) {
      sender.Add(c.clock.sender);
      id.Add(c.clock.message_id);
      recipient.Add(c.clock.recipient);
      label.Add(c.clock.label);
      urgency.Add(c.clock.urgency);
      started.Add(c.clock.started_ms);
      due.Add(c.clock.due_ms);
      purge.Add(c.purge_after_ms);
    }
    Params p;
    for (A* a : {&sender, &id, &recipient, &label, &urgency, &started, &due, &purge}) p.Add(std::move(*a));
    calls->push_back({kStartClocks, std::move(p), "starting response clocks"});
  }
  for (const auto& [stmt, ends, what] :
       {std::tuple<Stmt, const std::vector<WriteBatch::ClockEnd>*, const char*>{
            kAnswerClocks, &batch.clocks_answered, "stopping response clocks"},
        {kFireClocks, &batch.clocks_fired, "firing response clocks"}}) {
    if (ends->empty()) continue;
    Params::Array sender(Params::kText), id(Params::kText), recipient(Params::kText), at(Params::kInt8);
    for (const WriteBatch::ClockEnd& e : *ends) {
      sender.Add(e.sender);
      id.Add(e.message_id);
      recipient.Add(e.recipient);
      at.Add(e.at_ms);
    }
    calls->push_back(
        {stmt, Params().Add(std::move(sender)).Add(std::move(id)).Add(std::move(recipient)).Add(std::move(at)), what});
  }
  for (const WriteBatch::ClocksWithdrawn& w : batch.clocks_withdrawn) {
    calls->push_back({kWithdrawClocks, Params().Text(w.sender).Text(w.case_pseudonym),
                      "forgetting a withdrawn case's response clocks"});
  }
  if (!batch.threads.empty()) {
    using A = Params::Array;
    A ref(Params::kText), holder(Params::kText), root(Params::kText), origin(Params::kText),
        handling(Params::kInt8), purpose(Params::kText), circle(Params::kText), onward(Params::kText),
        purge(Params::kInt8), message_id(Params::kText);
    for (const WriteBatch::ThreadStart& t : batch.threads) {
      message_id.Add(t.thread.message_id);
      ref.Add(t.thread.ref);
      holder.Add(t.thread.holder);
      root.Add(t.thread.root);
      origin.Add(t.thread.origin);
      handling.Add(t.thread.handling);
      purpose.Add(t.thread.purpose);
      circle.Add(JoinList(t.thread.circle));
      onward.Add(JoinList(t.thread.onward));
      purge.Add(t.purge_after_ms);
    }
    Params p;
    for (A* a : {&ref, &holder, &root, &origin, &handling, &purpose, &circle, &onward, &purge, &message_id}) {
      p.Add(std::move(*a));
    }
    calls->push_back({kStartThreads, std::move(p), "recording thread references"});
  }
  for (const WriteBatch::Grant& g : batch.grants) {
    // One statement per grant: a grantee appears once in it (ON CONFLICT
    // may not touch a row twice in one statement).
    using A = Params::Array;
    A root(Params::kText), grantee(Params::kText), purge(Params::kInt8);
    std::vector<std::string> seen;
    for (const std::string& who : g.grantees) {
      if (std::find(seen.begin(), seen.end(), who) != seen.end()) continue;
      seen.push_back(who);
      root.Add(g.root);
      grantee.Add(who);
      purge.Add(g.purge_after_ms);
    }
    if (seen.empty()) continue;
    Params p;
    for (A* a : {&root, &grantee, &purge}) p.Add(std::move(*a));
    calls->push_back({kAddGrants, std::move(p), "recording a permission grant"});
  }
  if (!batch.notices.empty()) {
    Params::Array agency(Params::kText), receipt(Params::kBytea);
    for (const auto& [to, bytes] : batch.notices) {
      agency.Add(to);
      receipt.Add(bytes);
    }
    calls->push_back({kAddNotices, Params().Add(std::move(agency)).Add(std::move(receipt)), "writing notices"});
  }
  if (!batch.notices_sent.empty()) {
    Params::Array seq(Params::kInt8);
    for (int64_t n : batch.notices_sent) seq.Add(n);
    calls->push_back({kDeleteNotices, Params().Add(std::move(seq)), "deleting notices"});
  }
  if (!batch.ledger.empty()) {
    // One row for the batch: a statement per record would cost more than
    // the records themselves.
    std::string text;
    for (const auto& [seq, line] : batch.ledger) {
      if (line.find('\n') != std::string::npos) return Status::Internal("store: a ledger record spans lines");
      if (!text.empty()) text += '\n';
      text += line;
    }
    calls->push_back({kAppendLedger,
                      Params()
                          .Int(static_cast<int64_t>(batch.ledger.back().first))
                          .Int(static_cast<int64_t>(batch.ledger.front().first))
                          .Text(text),
                      "writing ledger records"});
  }
  // batch.trim_ledger_to is not applied: brokers sharing this database
  // each have their own ledger file, so the database keeps every record
  // and is the authoritative chain, which a broker taking the lease brings
  // its file up to (docs/audit.md).
  if (batch.purge_before_ms > 0) calls->push_back({kPurge, Params().Int(batch.purge_before_ms), "purging"});
  // Last: the shredded cases' keys go, after the erasure's own copies, and
  // every other key is re-wrapped under the ring's new epoch.
  if (!plan.deleted.empty()) {
    Params::Array s(Params::kText), h(Params::kBytea);
    for (const auto& [sender, hash] : plan.deleted) {
      s.Add(sender);
      h.Add(hash);
    }
    calls->push_back({kDeleteCaseKeys, Params().Add(std::move(s)).Add(std::move(h)), "destroying case keys"});
  }
  if (plan.staged) {
    Params::Array s(Params::kText), h(Params::kBytea), w(Params::kBytea);
    for (const auto& [id, wrapped] : plan.staged->wrapped) {
      const size_t zero = id.find('\0');
      s.Add(id.substr(0, zero));
      h.Add(id.substr(zero + 1));
      w.Add(wrapped);
    }
    calls->push_back({kRewrapCaseKeys,
                      Params().Add(std::move(s)).Add(std::move(h)).Int(static_cast<int64_t>(plan.staged->epoch)).Add(std::move(w)),
                      "re-wrapping the case keys"});
    bool ok = false;
    Params meta = KekMetaParams(plan.staged->epoch, plan.staged->kek, &ok);
    if (!ok) return Status::Internal("store: cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
    calls->push_back({kPutKekMeta, std::move(meta), "writing the case-key epoch"});
  }
  if (max_value_bytes_ > 0) {
    for (const Call& call : *calls) {
      if (call.params.largest() > max_value_bytes_) {
        return Status::IoError("store " + where_ + ": " + call.what + ": a value of " +
                               std::to_string(call.params.largest()) + " bytes is larger than the " +
                               std::to_string(max_value_bytes_) + " the store takes (a value was refused)");
      }
    }
  }
  return Status::Ok();
}

Status PgStore::Apply(const WriteBatch& batch, std::vector<int64_t>* seqs) {
  if (seqs) seqs->assign(batch.copies.size(), 0);
  if (batch.empty()) return Status::Ok();
  std::vector<Call> calls;
  // Unique per batch of this process (and, by the random part, of any
  // other): what the database keeps of the last batch it committed.
  if (token_prefix_.empty()) {
    uint8_t random[8];
    if (RAND_bytes(random, sizeof random) != 1) {
      return Status::Internal("store: OpenSSL's random source failed (RAND_bytes)");
    }
    for (uint8_t b : random) token_prefix_ += "0123456789abcdef"[b >> 4], token_prefix_ += "0123456789abcdef"[b & 15];
  }
  const std::string token = token_prefix_ + ":" + std::to_string(++batches_);
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  // The case keys the batch uses are read first (one round trip).
  auto plan = PlanCaseKeys(batch);
  if (!plan.ok()) return plan.status();
  // Everything is sealed and checked before anything is sent.
  if (Status built = BuildBatch(batch, token, *plan, &calls); !built.ok()) {
    if (plan->staged) ring_->Abandon(plan->staged->epoch);
    return built;
  }
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Status st = RunPipeline(calls, seqs);
  // A rotation's old KEK goes once the database holds the new epoch; a
  // batch that surely failed forgets the new one. One whose outcome stays
  // unknown keeps both (neither is lost; the next rotation settles it).
  auto finish_ring = [&](bool committed) {
    if (!ring_) return;
    // What the database now holds: the batch's keys, unless it deleted
    // some (the ring moved on) or its outcome is not known.
    if (committed && plan->deleted.empty() && !plan->staged) {
      RememberCaseKeys(plan->keys);
    } else {
      ForgetKnownCaseKeys();
    }
    if (!committed) {
      if (plan->staged) ring_->Abandon(plan->staged->epoch);
      return;
    }
    const uint64_t staged = plan->staged ? plan->staged->epoch : 0;
    if (ring_->Retire(staged)) spdlog::info("event=case_keys_rotated epoch={} cases={}", staged, plan->staged->wrapped.size());
  };
  if (st.ok()) {
    finish_ring(true);
    return st;
  }
  if (!commit_outcome_unknown_) {
    finish_ring(false);
    return st;
  }
  // The connection was lost after COMMIT was sent: the batch may have
  // committed. Answering "unavailable" for a stored batch would make the
  // core undo ledger records the database kept; ask the database.
  commit_outcome_unknown_ = false;
  if (Status connected = EnsureConnected(); !connected.ok()) {
    return Status::IoError(st.message() + "; whether COMMIT happened is unknown: " + connected.message());
  }
  Result r = Exec(conn_, kBatchMark, Params());
  if (!Succeeded(r)) {
    return Status::IoError(st.message() + "; whether COMMIT happened is unknown: " + ServerError(r.get(), conn_));
  }
  if (PQntuples(r.get()) == 1 && GetText(r.get(), 0, 0) == token) {
    spdlog::warn("event=store_commit_confirmed store=\"{}\" reason=\"the connection was lost after COMMIT; the "
                 "database has the batch\"", where_);
    finish_ring(true);
    return Status::Ok();
  }
  finish_ring(false);
  return st;
}

Status PgStore::RunPipeline(const std::vector<Call>& calls, std::vector<int64_t>* seqs) {
  // Filled in as the answers come, kept only if the batch commits.
  std::vector<int64_t> assigned;
  if (seqs) assigned.assign(seqs->size(), 0);
  if (PQenterPipelineMode(conn_) != 1) {
    return Status::IoError("store " + where_ + ": cannot enter pipeline mode: " + ServerError(nullptr, conn_));
  }
  // Sent: BEGIN, the calls, COMMIT, then one sync. libpq reads while it
  // waits to send, so a large batch cannot deadlock on full buffers.
  bool sent = PQsendQueryParams(conn_, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
  for (size_t i = 0; sent && i < calls.size(); ++i) {
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    calls[i].params.Arrays(&values, &lengths, &formats);
    if (kStatements[calls[i].stmt].plan_each_time) {
      sent = PQsendQueryParams(conn_, kStatements[calls[i].stmt].sql, calls[i].params.size(), nullptr, values.data(),
                               lengths.data(), formats.data(), 1) == 1;
    } else {
      sent = PQsendQueryPrepared(conn_, kStatements[calls[i].stmt].name, calls[i].params.size(), values.data(),
                                 lengths.data(), formats.data(), 1) == 1;
    }
  }
  sent = sent && PQsendQueryParams(conn_, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
  // From here the server may commit whatever this process hears.
  const bool commit_queued = sent;
  sent = sent && PQpipelineSync(conn_) == 1;
  if (sent && break_after_send_for_testing_) BreakConnectionForTesting();
  if (!sent) {
    commit_outcome_unknown_ = commit_queued;
    // The connection is in an unknown state: drop it (the server rolls an
    // open transaction back); the next call connects again.
    const std::string error = ServerError(nullptr, conn_);
    PQfinish(conn_);
    conn_ = nullptr;
    return Status::IoError("store " + where_ + ": sending the batch: " + error);
  }
  // One result per query (then a null), then the sync's.
  std::string failure;
  bool committed = false;
  for (size_t i = 0; i < calls.size() + 2; ++i) {
    Result r = Wrap(PQgetResult(conn_));
    if (!r) {
      failure = "the connection was lost: " + ServerError(nullptr, conn_);
      break;
    }
    const ExecStatusType s = PQresultStatus(r.get());
    const char* what = i == 0 ? "BEGIN" : i == calls.size() + 1 ? "COMMIT" : calls[i - 1].what;
    if (s == PGRES_FATAL_ERROR && failure.empty()) failure = std::string(what) + ": " + ServerError(r.get(), conn_);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_PIPELINE_ABORTED && s != PGRES_FATAL_ERROR &&
        failure.empty()) {
      failure = std::string(what) + ": unexpected result " + PQresStatus(s);
    }
    if (seqs && s == PGRES_TUPLES_OK && i >= 1 && i <= calls.size() && calls[i - 1].stmt == kEnqueue) {
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        const int64_t ord = GetInt(r.get(), row, 1);
        const size_t at = calls[i - 1].first_copy + static_cast<size_t>(ord - 1);
        if (ord >= 1 && at < assigned.size()) assigned[at] = GetInt(r.get(), row, 0);
      }
    }
    // COMMIT of a transaction that failed answers ROLLBACK.
    if (i == calls.size() + 1) committed = s == PGRES_COMMAND_OK && std::strcmp(PQcmdStatus(r.get()), "COMMIT") == 0;
    Result end = Wrap(PQgetResult(conn_));
    if (end) {
      failure = failure.empty() ? std::string(what) + ": more than one result" : failure;
      break;
    }
  }
  bool synced = false;
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) {
    for (int guard = 0; guard < static_cast<int>(calls.size()) + 4; ++guard) {
      Result r = Wrap(PQgetResult(conn_));
      if (r && PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) {
        synced = true;
        break;
      }
      if (!r && PQstatus(conn_) != CONNECTION_OK) break;
    }
  }
  if (!synced || PQexitPipelineMode(conn_) != 1) {
    if (failure.empty()) failure = "the pipeline did not end: " + ServerError(nullptr, conn_);
    PQfinish(conn_);  // the server rolls back whatever was open
    conn_ = nullptr;
    // COMMIT answered COMMIT: the batch is durable; only the end was lost.
    if (committed) {
      if (seqs) *seqs = std::move(assigned);
      return Status::Ok();
    }
    // Lost before COMMIT's answer: the caller asks the database (Apply).
    commit_outcome_unknown_ = true;
    return Status::IoError("store " + where_ + ": " + failure);
  }
  if (failure.empty() && !committed) failure = "COMMIT did not commit";
  if (!failure.empty()) {
    // An error inside BEGIN..COMMIT leaves the transaction aborted: end it.
    Result rollback = Wrap(PQexec(conn_, "ROLLBACK"));
    if (!Succeeded(rollback)) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    return Status::IoError("store " + where_ + ": " + failure + "; nothing of the batch was stored");
  }
  if (seqs) *seqs = std::move(assigned);
  return Status::Ok();
}

void PgStore::BreakConnectionForTesting() {
  break_after_send_for_testing_ = false;
  // Once the server has answered (so it has run COMMIT), the socket is
  // replaced by /dev/null: libpq reads an end of file, as when a network
  // fails between the server's COMMIT and its answer.
  pollfd p{PQsocket(conn_), POLLIN, 0};
  ::poll(&p, 1, 5000);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    ::dup2(devnull, PQsocket(conn_));
    ::close(devnull);
  }
}

StatusOr<std::optional<std::vector<uint8_t>>> PgStore::FindReceipt(const std::string& sender,
                                                                  const std::string& message_id) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kFindReceipt, Params().Text(sender).Text(message_id));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading a receipt: " + ServerError(r.get(), conn_));
  if (PQntuples(r.get()) == 0) return std::optional<std::vector<uint8_t>>();
  return std::optional<std::vector<uint8_t>>(GetBytes(r.get(), 0, 0));
}

StatusOr<size_t> PgStore::ScanReceiptKeys(ReceiptKeyCursor* after, size_t limit, const ReceiptKeyVisitor& each) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  // The default cursor ('', '') is before every key: '' sorts first in
  // every collation, and no sender is ''.
  Result r = Exec(conn_, kReceiptKeys,
                  Params().Text(after->sender).Text(after->message_id).Int(static_cast<int64_t>(limit)));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading the receipts' keys: " + ServerError(r.get(), conn_));
  }
  const int rows = PQntuples(r.get());
  for (int row = 0; row < rows; ++row) {
    const std::string sender = GetText(r.get(), row, 0), id = GetText(r.get(), row, 1);
    each(sender, id, GetInt(r.get(), row, 2));
  }
  if (rows > 0) *after = {GetText(r.get(), rows - 1, 0), GetText(r.get(), rows - 1, 1)};
  return static_cast<size_t>(rows);
}

StatusOr<std::vector<std::optional<std::vector<uint8_t>>>> PgStore::FindReceipts(
    const std::vector<std::pair<std::string, std::string>>& keys) {
  std::vector<std::optional<std::vector<uint8_t>>> out(keys.size());
  if (keys.empty()) return out;
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Params::Array senders(Params::kText), ids(Params::kText);
  for (const auto& [sender, id] : keys) {
    senders.Add(sender);
    ids.Add(id);
  }
  Result r = Exec(conn_, kFindReceipts, Params().Add(std::move(senders)).Add(std::move(ids)));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading receipts: " + ServerError(r.get(), conn_));
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    const int64_t ord = GetInt(r.get(), row, 0);
    if (ord < 1 || ord > static_cast<int64_t>(keys.size())) {
      return Status::Internal("store " + where_ + ": reading receipts: the server answered a key it was not asked");
    }
    out[static_cast<size_t>(ord - 1)] = GetBytes(r.get(), row, 1);
  }
  return out;
}

StatusOr<std::vector<QueuedMessage>> PgStore::Pending(const std::string& recipient, int64_t after_seq, int limit,
                                                      std::vector<int64_t>* damaged_out) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kPending, Params().Text(recipient).Int(after_seq).Int(limit));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading the queue: " + ServerError(r.get(), conn_));
  std::vector<QueuedMessage> out;
  std::vector<int64_t> damaged;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    QueuedMessage m;
    m.seq = GetInt(r.get(), row, 0);
    m.sender = GetText(r.get(), row, 1);
    m.message_id = GetText(r.get(), row, 2);
    const std::vector<uint8_t> sealed = GetBytes(r.get(), row, 3);
    const std::vector<uint8_t> hash = GetBytes(r.get(), row, 5);
    std::optional<uint64_t> epoch;
    if (!PQgetisnull(r.get(), row, 6)) epoch = static_cast<uint64_t>(GetInt(r.get(), row, 6));
    auto opened = OpenCopy(ring_.get(), key_, m.sender, m.message_id, recipient, std::string(hash.begin(), hash.end()),
                           epoch, GetBytes(r.get(), row, 7), sealed);
    if (!opened) {
      damaged.push_back(m.seq);  // set aside, so it cannot block the queue
      continue;
    }
    m.envelope = std::move(*opened);
    m.label = GetText(r.get(), row, 4);
    out.push_back(std::move(m));
  }
  for (int64_t seq : damaged) {
    spdlog::error("event=store_damaged_message seq={} recipient={} action=set_aside "
                  "hint=\"restore the store from a backup to recover it\"", seq, recipient);
    if (damaged_out) {
      damaged_out->push_back(seq);
      continue;
    }
    Result u = Exec(conn_, kSetAsideNow, Params().Int(seq));
    if (!Succeeded(u)) return Status::IoError("store " + where_ + ": setting aside: " + ServerError(u.get(), conn_));
  }
  return out;
}

namespace {

// Rows of (sender, message_id, recipient, label, seq).
std::vector<ExpiredMessage> ReadExpired(const PGresult* r) {
  std::vector<ExpiredMessage> out;
  for (int row = 0; row < PQntuples(r); ++row) {
    out.push_back({GetText(r, row, 0), GetText(r, row, 1), GetText(r, row, 2), GetText(r, row, 3),
                   GetInt(r, row, 4)});
  }
  return out;
}

}  // namespace

StatusOr<std::vector<ExpiredMessage>> PgStore::Due(int64_t now_ms) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kDue, Params().Int(now_ms));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": finding expired messages: " + ServerError(r.get(), conn_));
  }
  return ReadExpired(r.get());
}

StatusOr<std::vector<ExpiredMessage>> PgStore::QueuedOfCase(const std::string& sender, const std::string& case_ref) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kQueuedOfCase, Params().Text(sender).Bytes(CaseHash(key_, sender, case_ref)));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": finding a case's queued messages: " + ServerError(r.get(), conn_));
  }
  std::vector<ExpiredMessage> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    out.push_back({sender, GetText(r.get(), row, 0), GetText(r.get(), row, 1), GetText(r.get(), row, 2),
                   GetInt(r.get(), row, 3)});
  }
  return out;
}

StatusOr<std::unordered_map<std::string, int64_t>> PgStore::QueueDepths() {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kDepths, Params());
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": counting queues: " + ServerError(r.get(), conn_));
  std::unordered_map<std::string, int64_t> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) out[GetText(r.get(), row, 0)] = GetInt(r.get(), row, 1);
  return out;
}

StatusOr<std::vector<std::string>> PgStore::Disclosures(const std::string& sender, const std::string& case_ref) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kDisclosures, Params().Text(sender).Bytes(CaseHash(key_, sender, case_ref)));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading disclosures: " + ServerError(r.get(), conn_));
  }
  std::vector<std::string> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) out.push_back(GetText(r.get(), row, 0));
  return out;
}

StatusOr<std::vector<Notice>> PgStore::Notices(const std::string& agency, int limit) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kNotices, Params().Text(agency).Int(limit));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading notices: " + ServerError(r.get(), conn_));
  std::vector<Notice> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    out.push_back({GetInt(r.get(), row, 0), GetBytes(r.get(), row, 1)});
  }
  return out;
}

StatusOr<LedgerTail> PgStore::ReadLedgerTail() {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  LedgerTail tail;
  Result position = Exec(conn_, kLedgerPosition, Params());
  if (!Succeeded(position)) {
    return Status::IoError("store " + where_ + ": reading the ledger position: " +
                           ServerError(position.get(), conn_));
  }
  if (PQntuples(position.get()) == 1) tail.committed_seq = static_cast<uint64_t>(GetInt(position.get(), 0, 0));
  Result r = Exec(conn_, kLedgerTail, Params());
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading ledger records: " + ServerError(r.get(), conn_));
  }
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    uint64_t seq = static_cast<uint64_t>(GetInt(r.get(), row, 0));
    const std::string text = GetText(r.get(), row, 1);
    for (size_t start = 0; start <= text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      tail.lines.emplace_back(seq++, text.substr(start, end - start));
      start = end + 1;
    }
  }
  return tail;
}

StatusOr<std::vector<Clock>> PgStore::DueClocks(int64_t now_ms, int limit) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kDueClocks, Params().Int(now_ms).Int(limit));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": finding response clocks past their deadline: " +
                           ServerError(r.get(), conn_));
  }
  std::vector<Clock> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    out.push_back({GetText(r.get(), row, 0), GetText(r.get(), row, 1), GetText(r.get(), row, 2),
                   GetText(r.get(), row, 3), static_cast<int32_t>(GetInt(r.get(), row, 4)), GetInt(r.get(), row, 5),
                   GetInt(r.get(), row, 6)});
  }
  return out;
}

StatusOr<std::optional<int64_t>> PgStore::OldestOpenClock() {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kOldestClock, Params());
  if (!Succeeded(r) || PQntuples(r.get()) != 1) {
    return Status::IoError("store " + where_ + ": reading the oldest response clock: " + ServerError(r.get(), conn_));
  }
  if (PQgetisnull(r.get(), 0, 0)) return std::optional<int64_t>();
  return std::optional<int64_t>(GetInt(r.get(), 0, 0));
}

StatusOr<std::optional<Thread>> PgStore::FindThread(const std::string& ref) {
  auto found = FindThreads({ref});
  if (!found.ok()) return found.status();
  return std::move(found->front());
}

StatusOr<std::vector<std::optional<Thread>>> PgStore::FindThreads(const std::vector<std::string>& refs) {
  std::vector<std::optional<Thread>> out(refs.size());
  if (refs.empty()) return out;
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Params::Array array(Params::kText);
  for (const std::string& ref : refs) array.Add(ref);
  Result r = Exec(conn_, kFindThreads, Params().Add(std::move(array)));
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading threads: " + ServerError(r.get(), conn_));
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    const int64_t ord = GetInt(r.get(), row, 0);
    if (ord < 1 || ord > static_cast<int64_t>(refs.size())) {
      return Status::Internal("store " + where_ + ": reading threads: the server answered a reference it was not asked");
    }
    std::optional<Thread>& t = out[static_cast<size_t>(ord - 1)];
    if (!t) {
      t.emplace();
      t->ref = refs[static_cast<size_t>(ord - 1)];
      t->holder = GetText(r.get(), row, 1);
      t->root = GetText(r.get(), row, 2);
      t->origin = GetText(r.get(), row, 3);
      t->handling = static_cast<int32_t>(GetInt(r.get(), row, 4));
      t->purpose = GetText(r.get(), row, 5);
      t->circle = SplitList(GetText(r.get(), row, 6));
      t->onward = SplitList(GetText(r.get(), row, 7));
      t->message_id = GetText(r.get(), row, 8);
    }
    if (!PQgetisnull(r.get(), row, 9)) t->granted.push_back(GetText(r.get(), row, 9));
  }
  return out;
}

StatusOr<std::vector<QueueSummary>> PgStore::QueueSummaries() {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kSummaries, Params());
  if (!Succeeded(r)) return Status::IoError("store " + where_ + ": reading the queues: " + ServerError(r.get(), conn_));
  std::vector<QueueSummary> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    out.push_back({GetText(r.get(), row, 0), GetInt(r.get(), row, 1), GetInt(r.get(), row, 2),
                   GetInt(r.get(), row, 3)});
  }
  return out;
}

StatusOr<std::vector<QueueEntry>> PgStore::QueueEntries(const std::string& recipient, int limit) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kEntries, Params().Text(recipient).Int(limit));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading the queue of " + recipient + ": " +
                           ServerError(r.get(), conn_));
  }
  std::vector<QueueEntry> out;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    QueueEntry e;
    e.seq = GetInt(r.get(), row, 0);
    e.sender = GetText(r.get(), row, 1);
    e.message_id = GetText(r.get(), row, 2);
    // Only the type of the label is shown.
    e.type = CopyLabel::Parse(GetText(r.get(), row, 3)).type;
    e.set_aside = GetInt(r.get(), row, 4) == 5;
    e.created_ms = GetInt(r.get(), row, 5);
    out.push_back(std::move(e));
  }
  return out;
}

StatusOr<std::vector<ExpiredMessage>> PgStore::SetAside(const std::string& recipient) {
  LIAISON_RETURN_IF_ERROR(EnsureConnected());
  Result r = Exec(conn_, kSetAside, Params().Text(recipient));
  if (!Succeeded(r)) {
    return Status::IoError("store " + where_ + ": reading the set-aside messages of " + recipient + ": " +
                           ServerError(r.get(), conn_));
  }
  return ReadExpired(r.get());
}

namespace {

// The import's statements: rows keep their numbers (seq), so that the
// bodies, the set-aside copies and the delivery order stay as they were.
constexpr StatementText kImportStatements[] = {
    {"i_message",
     "INSERT INTO messages (seq, sender, message_id, recipient, case_hash, state, created_ms, expires_ms, acked_ms, "
     "purge_after_ms, label) OVERRIDING SYSTEM VALUE VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::bytea, "
     "$6::bigint, $7::bigint, $8::bigint, $9::bigint, $10::bigint, $11::text)"},
    {"i_body", "INSERT INTO bodies (seq, sealed) VALUES ($1::bigint, $2::bytea)"},
    {"i_receipt",
     "INSERT INTO receipts (sender, message_id, receipt, purge_after_ms) "
     "VALUES ($1::text, $2::text, $3::bytea, $4::bigint)"},
    {"i_disclosure", "INSERT INTO disclosures (sender, case_hash, recipient) VALUES ($1::text, $2::bytea, $3::text)"},
    {"i_notice",
     "INSERT INTO notices (seq, agency, receipt) OVERRIDING SYSTEM VALUE VALUES ($1::bigint, $2::text, $3::bytea)"},
    {"i_ledger_tail", "INSERT INTO ledger_tail (seq, first_seq, lines) VALUES ($1::bigint, $2::bigint, $3::text)"},
    {"i_ledger_position", "INSERT INTO ledger_position (id, seq) VALUES (1, $1::bigint)"},
    // Wrapped as they are: the same case-key ring opens them in the new store.
    {"i_case_key",
     "INSERT INTO case_keys (sender, case_hash, epoch, wrapped) VALUES ($1::text, $2::bytea, $3::bigint, $4::bytea)"},
    {"i_kek_meta",
     "INSERT INTO meta (name, value) VALUES ('case_kek_epoch', $1::bytea), ('case_kek_check', $2::bytea)"},
    {"i_clock",
     "INSERT INTO clocks (sender, message_id, recipient, label, urgency, started_ms, due_ms, purge_after_ms, fired_ms, "
     "answered_ms) VALUES ($1::text, $2::text, $3::text, $4::text, $5::bigint, $6::bigint, $7::bigint, $8::bigint, "
     "$9::bigint, $10::bigint)"},
    {"i_thread",
     "INSERT INTO threads (ref, holder, root, origin, handling, purpose, circle, onward, purge_after_ms, message_id) "
     "VALUES ($1::text, $2::text, $3::text, $4::text, $5::bigint, $6::text, $7::text, $8::text, $9::bigint, $10::text)"},
    {"i_grant", "INSERT INTO thread_grants (root, grantee, purge_after_ms) VALUES ($1::text, $2::text, $3::bigint)"},
    // The next seq is last + 1 (is_called true), or 1 for an empty table.
    {"i_numbering",
     "SELECT setval(pg_get_serial_sequence('messages', 'seq'), GREATEST($1::bigint, 1), $1::bigint > 0), "
     "setval(pg_get_serial_sequence('notices', 'seq'), GREATEST($2::bigint, 1), $2::bigint > 0)"},
};

constexpr const char* kCountRows =
    "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM bodies), (SELECT COUNT(*) FROM receipts), "
    "(SELECT COUNT(*) FROM disclosures), (SELECT COUNT(*) FROM notices), (SELECT COUNT(*) FROM ledger_tail), "
    "(SELECT COUNT(*) FROM ledger_position), (SELECT COUNT(*) FROM case_keys), (SELECT COUNT(*) FROM clocks), "
    "(SELECT COUNT(*) FROM threads), (SELECT COUNT(*) FROM thread_grants)";

}  // namespace

StatusOr<std::unique_ptr<PgImport>> PgImport::Begin(const PgConnectOptions& options, const StoreKey& key) {
  std::unique_ptr<PgImport> import(new PgImport());
  auto opened = PgStore::Open(options, key);
  if (!opened.ok()) return opened.status();
  import->store_ = std::move(*opened);
  pg_conn* conn = import->store_->conn_;
  const std::string& where = import->store_->where_;
  for (const StatementText& s : kImportStatements) {
    Result r = Wrap(PQprepare(conn, s.name, s.sql, 0, nullptr));
    if (!Succeeded(r)) {
      return Status::IoError("store " + where + ": preparing " + s.name + ": " + ServerError(r.get(), conn));
    }
  }
  for (const char* sql : {"BEGIN", kMigrationLock}) {
    Result r = Wrap(PQexec(conn, sql));
    if (!Succeeded(r)) return Status::IoError("store " + where + ": starting the import: " + ServerError(r.get(), conn));
  }
  import->open_ = true;
  // Empty, checked under the lock: a broker that started on this database
  // before has committed whatever it was going to.
  Result counts = Wrap(PQexec(conn, kCountRows));
  if (!Succeeded(counts) || PQntuples(counts.get()) != 1) {
    return Status::IoError("store " + where + ": counting its rows: " + ServerError(counts.get(), conn));
  }
  int64_t rows = 0;
  for (int i = 0; i < PQnfields(counts.get()); ++i) rows += std::atoll(PQgetvalue(counts.get(), 0, i));
  if (rows > 0) {
    return Status::InvalidArgument(
        "store " + where + " is not empty (messages " + PQgetvalue(counts.get(), 0, 0) + ", receipts " +
        PQgetvalue(counts.get(), 0, 2) + ", notices " + PQgetvalue(counts.get(), 0, 4) +
        ", ...): a migration fills only an empty database; create a new one (createdb) and name it in --url");
  }
  return import;
}

PgImport::~PgImport() {
  if (open_ && store_ && store_->conn_) Wrap(PQexec(store_->conn_, "ROLLBACK"));
}

Status PgImport::Exec(const char* name, const PgStore::Params& params, const char* what) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  params.Arrays(&values, &lengths, &formats);
  Result r = Wrap(PQexecPrepared(store_->conn_, name, params.size(), values.data(), lengths.data(), formats.data(), 1));
  if (Succeeded(r)) return Status::Ok();
  return Status::IoError("store " + store_->where_ + ": " + what + ": " + ServerError(r.get(), store_->conn_) +
                         "; nothing was migrated");
}

Status PgImport::Put(const Rows& rows) {
  if (!open_) return Status::Internal("store " + store_->where_ + ": the import is not open");
  for (const MessageRow& m : rows.messages) {
    PgStore::Params p;
    p.Int(m.seq).Text(m.sender).Text(m.message_id).Text(m.recipient);
    if (m.case_hash) p.Bytes(*m.case_hash); else p.Null();
    p.Int(m.state).Int(m.created_ms).Int(m.expires_ms);
    if (m.acked_ms) p.Int(*m.acked_ms); else p.Null();
    p.Int(m.purge_after_ms);
    if (m.label) p.Text(*m.label); else p.Null();
    LIAISON_RETURN_IF_ERROR(Exec("i_message", p, "copying a message row"));
  }
  for (const BodyRow& b : rows.bodies) {
    LIAISON_RETURN_IF_ERROR(Exec("i_body", PgStore::Params().Int(b.seq).Bytes(b.sealed), "copying a queued copy"));
  }
  for (const ReceiptRow& r : rows.receipts) {
    LIAISON_RETURN_IF_ERROR(Exec("i_receipt",
                                 PgStore::Params().Text(r.sender).Text(r.message_id).Bytes(r.receipt).Int(r.purge_after_ms),
                                 "copying a receipt"));
  }
  for (const DisclosureRow& d : rows.disclosures) {
    LIAISON_RETURN_IF_ERROR(Exec("i_disclosure", PgStore::Params().Text(d.sender).Bytes(d.case_hash).Text(d.recipient),
                                 "copying a disclosure"));
  }
  for (const NoticeRow& n : rows.notices) {
    LIAISON_RETURN_IF_ERROR(
        Exec("i_notice", PgStore::Params().Int(n.seq).Text(n.agency).Bytes(n.receipt), "copying a notice"));
  }
  for (const LedgerTailRow& l : rows.ledger_tail) {
    LIAISON_RETURN_IF_ERROR(Exec("i_ledger_tail", PgStore::Params().Int(l.seq).Int(l.first_seq).Text(l.lines),
                                 "copying ledger records"));
  }
  for (const CaseKeyRow& k : rows.case_keys) {
    LIAISON_RETURN_IF_ERROR(Exec("i_case_key", PgStore::Params().Text(k.sender).Bytes(k.case_hash).Int(k.epoch).Bytes(k.wrapped),
                                 "copying case keys"));
  }
  for (const ClockRow& c : rows.clocks) {
    PgStore::Params p;
    p.Text(c.sender).Text(c.message_id).Text(c.recipient).Text(c.label).Int(c.urgency).Int(c.started_ms);
    p.Int(c.due_ms).Int(c.purge_after_ms);
    if (c.fired_ms) p.Int(*c.fired_ms); else p.Null();
    if (c.answered_ms) p.Int(*c.answered_ms); else p.Null();
    LIAISON_RETURN_IF_ERROR(Exec("i_clock", p, "copying a response clock"));
  }
  for (const ThreadRow& t : rows.threads) {
    PgStore::Params p;
    p.Text(t.ref).Text(t.holder).Text(t.root).Text(t.origin).Int(t.handling).Text(t.purpose).Text(t.circle);
    p.Text(t.onward).Int(t.purge_after_ms).Text(t.message_id);
    LIAISON_RETURN_IF_ERROR(Exec("i_thread", p, "copying a case thread"));
  }
  for (const GrantRow& g : rows.grants) {
    LIAISON_RETURN_IF_ERROR(Exec("i_grant", PgStore::Params().Text(g.root).Text(g.grantee).Int(g.purge_after_ms),
                                 "copying a permission grant"));
  }
  return Status::Ok();
}

StatusOr<RowCounts> PgImport::Commit(const StoreTotals& totals) {
  if (!open_) return Status::Internal("store " + store_->where_ + ": the import is not open");
  pg_conn* conn = store_->conn_;
  const std::string& where = store_->where_;
  if (totals.ledger_position) {
    LIAISON_RETURN_IF_ERROR(
        Exec("i_ledger_position", PgStore::Params().Int(*totals.ledger_position), "writing the ledger position"));
  }
  LIAISON_RETURN_IF_ERROR(Exec("i_numbering", PgStore::Params().Int(totals.last_message_seq).Int(totals.last_notice_seq),
                               "setting the numbering"));
  if (totals.case_kek_epoch) {
    LIAISON_RETURN_IF_ERROR(Exec("i_kek_meta",
                                 PgStore::Params().Bytes(std::to_string(*totals.case_kek_epoch)).Bytes(totals.case_kek_check),
                                 "writing the case-key epoch"));
  }
  Result counts = Wrap(PQexec(conn, kCountRows));
  if (!Succeeded(counts) || PQntuples(counts.get()) != 1) {
    return Status::IoError("store " + where + ": counting the copied rows: " + ServerError(counts.get(), conn) +
                           "; nothing was migrated");
  }
  RowCounts found;
  int64_t* fields[] = {&found.messages, &found.bodies, &found.receipts, &found.disclosures, &found.notices,
                       &found.ledger_tail};
  for (int i = 0; i < 6; ++i) *fields[i] = std::atoll(PQgetvalue(counts.get(), 0, i));
  found.case_keys = std::atoll(PQgetvalue(counts.get(), 0, 7));
  const int64_t positions = std::atoll(PQgetvalue(counts.get(), 0, 6));
  found.clocks = std::atoll(PQgetvalue(counts.get(), 0, 8));
  found.threads = std::atoll(PQgetvalue(counts.get(), 0, 9));
  found.grants = std::atoll(PQgetvalue(counts.get(), 0, 10));
  if (!(found == totals.counts) || positions != (totals.ledger_position ? 1 : 0)) {
    return Status::Internal("store " + where + ": the copy does not match the source (source: " +
                            totals.counts.ToString() + "; copy: " + found.ToString() + "); nothing was migrated");
  }
  Result commit = Wrap(PQexec(conn, "COMMIT"));
  open_ = false;
  if (!Succeeded(commit) || std::strcmp(PQcmdStatus(commit.get()), "COMMIT") != 0) {
    return Status::IoError("store " + where + ": COMMIT failed: " + ServerError(commit.get(), conn) +
                           "; nothing was migrated");
  }
  return found;
}

}  // namespace liaison::store
