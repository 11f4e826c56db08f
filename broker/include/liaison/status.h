// Status and StatusOr: the one way liaison reports success and failure.
//
// The message path never throws; library exceptions are caught where the
// library is called and turned into a Status with context. A Status that
// reaches a person says what was wrong, where (file:line, field path, agency
// id) and, where it can, what to do about it.
#ifndef LIAISON_STATUS_H_
#define LIAISON_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace liaison {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,   // the input is wrong; fix it and retry
    kNotFound,          // a named thing (file, agency, key) does not exist
    kPermissionDenied,  // authentication or authorisation refused
    kUnavailable,       // a peer or resource is not reachable now; retry later
    kDeadlineExceeded,  // no answer in time
    kIoError,           // the operating system refused a read or write
    kCorruption,        // stored data is damaged
    kInternal,          // a bug: please report
  };

  // The default Status is OK.
  Status() = default;

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status PermissionDenied(std::string msg) { return Status(Code::kPermissionDenied, std::move(msg)); }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status DeadlineExceeded(std::string msg) { return Status(Code::kDeadlineExceeded, std::move(msg)); }
  static Status IoError(std::string msg) { return Status(Code::kIoError, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK", or "<code name>: <message>".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(const std::string& context) const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

const char* CodeName(Status::Code code);

// Either a value or a non-OK Status. Accessing value() of an error is a bug
// (asserted in debug builds).
template <typename T>
class StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT
  StatusOr(T value) : value_(std::move(value)) {}                                 // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace liaison

#define LIAISON_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::liaison::Status _st = (expr);            \
    if (!_st.ok()) return _st;                 \
  } while (0)

#endif  // LIAISON_STATUS_H_
