// kvq/error.h — the one exception type kvq throws.
#pragma once
#include <stdexcept>
#include <sstream>
#include <string>

namespace kvq {

// kType: wrong dtype/device (Python: TypeError). kValue: everything else (Python: ValueError).
enum class ErrorKind { kValue, kType, kNotImplemented, kRuntime };

// Message format: "<function>: <argument>: expected <what>, got <what came>".
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string function, std::string argument, std::string message);
  ErrorKind kind() const { return kind_; }
  const std::string& function() const { return function_; }
  const std::string& argument() const { return argument_; }

 private:
  ErrorKind kind_;
  std::string function_;
  std::string argument_;
};

}  // namespace kvq

// Stays on in release builds. `arg` names the offending argument; `msg` is any streamable expression.
#define KVQ_CHECK(cond, func, arg, msg)                                                   \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::ostringstream kvq_os_;                                                         \
      kvq_os_ << msg;                                                                     \
      throw ::kvq::Error(::kvq::ErrorKind::kValue, func, arg, kvq_os_.str());             \
    }                                                                                     \
  } while (0)
